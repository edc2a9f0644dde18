//! What budgets and alert rules read from ClickHouse, and the `alerts` table they write: the
//! outbox of webhook deliveries, one row version per state change ([`DeliveryState`]).
//!
//! Spend is read from the rollup *state* tables (`sumMerge` with the filter on the table
//! itself), not from the analyst views: ClickHouse 18.16 does not push a `WHERE` into a view,
//! and a budget is evaluated every few seconds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use clickhouse::{Client, Row};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use costline_core::budget::{Scope, TagMatch};
use costline_core::rules::{HourlyCost, ModelUse};
use costline_core::PicoUsd;

use crate::sink::{bounded, ClickHouseTarget, SinkError};

/// Longest wait for one ClickHouse call of the evaluator, the outbox or the budget API: a hung
/// server must not stall evaluation or delivery for good.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Where one delivery (an alert and a webhook) stands, stored in `alerts.delivery_state` as the
/// strings analysts query (`pending`, `delivered`, `failed`, `no_webhook`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not delivered yet: the next attempt is due at `next_attempt_at`.
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Refused (a 3xx or 4xx other than 429), given up after the last attempt, or its webhook
    /// is no longer configured: never attempted again.
    Failed,
    /// The alert has no webhook to go to; recorded all the same.
    NoWebhook,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            DeliveryState::NoWebhook => "no_webhook",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryState> {
        [DeliveryState::Pending, DeliveryState::Delivered, DeliveryState::Failed, DeliveryState::NoWebhook]
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for DeliveryState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DeliveryState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        DeliveryState::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown alerts.delivery_state {text:?}")))
    }
}

/// One row of `alerts` (one alert and one webhook, one version of its delivery state).
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct AlertRow {
    pub alert_id: String,
    pub webhook: String,
    pub kind: String,
    pub source: String,
    pub scope: String,
    pub period_start: u32,
    pub threshold_percent: u32,
    /// Pico-USD (`Decimal(38, 12)`).
    pub spend_usd: i128,
    pub limit_usd: i128,
    pub value: f64,
    pub fired_at: u32,
    pub summary: String,
    /// The JSON body, fixed when the alert fired: every delivery attempt sends the same bytes.
    pub body: String,
    pub delivery_state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: u32,
    pub last_error: String,
    pub updated_at: u32,
    pub version: u64,
}

/// Most alert ids one query looks up: with ids of 35 bytes, about 40 KB of query text, far
/// below ClickHouse's `max_query_size` (256 KiB by default).
const IDS_PER_QUERY: usize = 1_000;

/// The alerts' reads of the rollups and their reads and writes of the `alerts` table.
#[derive(Clone)]
pub struct AlertStore {
    client: Client,
}

const ALERT_COLUMNS: &str = "alert_id, webhook, kind, source, scope, toUInt32(period_start) AS period_start, \
    threshold_percent, spend_usd, limit_usd, value, toUInt32(fired_at) AS fired_at, summary, body, delivery_state, \
    attempts, toUInt32(next_attempt_at) AS next_attempt_at, last_error, toUInt32(updated_at) AS updated_at, version";

impl AlertStore {
    pub fn new(target: &ClickHouseTarget) -> AlertStore {
        AlertStore { client: target.client() }
    }

    /// Spend of each `(scope, start, end)`, with event times in `[start, end)` (epoch seconds),
    /// in the same order: one query per rollup read (the hourly rollup for periods that start
    /// and end on hours, else the minute rollup), however many budgets there are.
    pub async fn spends(&self, periods: &[(&Scope, i64, i64)]) -> Result<Vec<PicoUsd>, SinkError> {
        let mut spends = vec![PicoUsd(0); periods.len()];
        let on_hours = |&(_, start, end): &(&Scope, i64, i64)| start % 3600 == 0 && end % 3600 == 0;
        for (table, hourly) in [("usage_hour_state", true), ("usage_minute_state", false)] {
            let chosen: Vec<usize> = (0..periods.len()).filter(|&i| on_hours(&periods[i]) == hourly).collect();
            let (Some(from), Some(to)) =
                (chosen.iter().map(|&i| periods[i].1).min(), chosen.iter().map(|&i| periods[i].2).max())
            else {
                continue;
            };
            let mut sums = Vec::with_capacity(chosen.len());
            let mut values: Vec<String> = Vec::new();
            for &i in &chosen {
                let (scope, start, end) = periods[i];
                let (filter, scope_values) = scope_filter(scope);
                sums.push(format!(
                    "sumMergeIf(cost_usd_state, window_start >= toDateTime({start}) AND window_start < toDateTime({end}){filter})"
                ));
                values.extend(scope_values);
            }
            let sql = format!(
                "SELECT [{}] FROM {table} WHERE window_start >= toDateTime(?) AND window_start < toDateTime(?) \
                 AND endpoint_tag != ''",
                sums.join(", ")
            );
            let mut query = self.client.query(&sql);
            for value in values {
                query = query.bind(value);
            }
            let found = bounded(READ_TIMEOUT, query.bind(from).bind(to).fetch_one::<Vec<i128>>()).await?;
            for (&i, spend) in chosen.iter().zip(found) {
                spends[i] = PicoUsd(spend);
            }
        }
        Ok(spends)
    }

    /// Event time up to which every partition of `topic` has been flushed: the oldest of the
    /// partitions' newest flushed record times (epoch seconds; 0 if nothing was flushed).
    pub async fn as_of(&self, topic: &str) -> Result<u32, SinkError> {
        let query = self
            .client
            .query(
                "SELECT toUInt32(min(newest)) FROM (SELECT max(newest_record_time) AS newest FROM flushes \
                 WHERE kafka_topic = ? GROUP BY kafka_partition)",
            )
            .bind(topic);
        bounded(READ_TIMEOUT, query.fetch_one()).await
    }

    /// Endpoint → (requests, retries) of real prod traffic with event times from `since`.
    pub async fn retries_by_endpoint(&self, since: i64) -> Result<BTreeMap<String, (u64, u64)>, SinkError> {
        #[derive(Row, Deserialize)]
        struct R {
            endpoint_tag: String,
            requests: u64,
            attempts: u64,
        }
        let query = self
            .client
            .query(
                "SELECT endpoint_tag, sumMerge(requests_state) AS requests, sumMerge(attempts_state) AS attempts \
                 FROM usage_minute_state WHERE window_start >= toDateTime(?) AND endpoint_tag != '' \
                 AND data_mode = 'real' AND environment = 'prod' GROUP BY endpoint_tag",
            )
            .bind(since);
        let rows = bounded(READ_TIMEOUT, query.fetch_all::<R>()).await?;
        Ok(rows.into_iter().map(|r| (r.endpoint_tag, (r.requests, r.attempts.saturating_sub(r.requests)))).collect())
    }

    /// Endpoint → its cost in the hour starting at `hour_start` and in the `trailing_hours`
    /// before it (average over the hours with traffic, and how many had traffic), real prod
    /// traffic.
    pub async fn hourly_costs(
        &self,
        hour_start: i64,
        trailing_hours: i64,
    ) -> Result<BTreeMap<String, HourlyCost>, SinkError> {
        #[derive(Row, Deserialize)]
        struct R {
            endpoint_tag: String,
            last: f64,
            trailing: f64,
            hours: u64,
        }
        let query = self
            .client
            .query(
                "SELECT endpoint_tag, \
                 toFloat64(sumMergeIf(cost_usd_state, window_start = toDateTime(?))) AS last, \
                 toFloat64(sumMergeIf(cost_usd_state, window_start < toDateTime(?))) AS trailing, \
                 uniqExactIf(window_start, window_start < toDateTime(?)) AS hours \
                 FROM usage_hour_state WHERE window_start >= toDateTime(?) AND window_start <= toDateTime(?) \
                 AND endpoint_tag != '' AND data_mode = 'real' AND environment = 'prod' GROUP BY endpoint_tag",
            )
            .bind(hour_start)
            .bind(hour_start)
            .bind(hour_start)
            .bind(hour_start - trailing_hours * 3600)
            .bind(hour_start);
        let rows = bounded(READ_TIMEOUT, query.fetch_all::<R>()).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let cost = HourlyCost {
                    last: r.last,
                    trailing_average: r.trailing / r.hours.max(1) as f64,
                    trailing_hours: u32::try_from(r.hours).unwrap_or(u32::MAX),
                };
                (r.endpoint_tag, cost)
            })
            .collect())
    }

    /// Model uses (endpoint, prompt version, provider, model) of real traffic with event
    /// times in `[start, end)`, each with the hours it was seen in (their starts, epoch seconds).
    pub async fn model_uses(&self, start: i64, end: i64) -> Result<BTreeMap<ModelUse, Vec<u32>>, SinkError> {
        #[derive(Row, Deserialize)]
        struct R {
            endpoint_tag: String,
            prompt_version: String,
            provider: String,
            model: String,
            hours: Vec<u32>,
        }
        let query = self
            .client
            .query(
                "SELECT endpoint_tag, prompt_version, provider, model, groupUniqArray(window_start) AS hours \
                 FROM usage_hour_state WHERE window_start >= toDateTime(?) AND window_start < toDateTime(?) \
                 AND endpoint_tag != '' AND data_mode = 'real' GROUP BY endpoint_tag, prompt_version, provider, model",
            )
            .bind(start)
            .bind(end);
        let rows = bounded(READ_TIMEOUT, query.fetch_all::<R>()).await?;
        Ok(rows.into_iter().map(|r| ((r.endpoint_tag, r.prompt_version, r.provider, r.model), r.hours)).collect())
    }

    /// (provider, model) → unpriced attempts with event times from `since`.
    pub async fn unpriced_models(&self, since: i64) -> Result<BTreeMap<(String, String), u64>, SinkError> {
        #[derive(Row, Deserialize)]
        struct R {
            provider: String,
            model: String,
            unpriced: u64,
        }
        let query = self
            .client
            .query(
                "SELECT provider, model, sumMerge(unpriced_attempts_state) AS unpriced FROM usage_minute_state \
                 WHERE window_start >= toDateTime(?) AND endpoint_tag != '' GROUP BY provider, model HAVING unpriced > 0",
            )
            .bind(since);
        let rows = bounded(READ_TIMEOUT, query.fetch_all::<R>()).await?;
        Ok(rows.into_iter().map(|r| ((r.provider, r.model), r.unpriced)).collect())
    }

    /// Which of `alert_ids` were already fired. The ids are sent in chunks of
    /// [`IDS_PER_QUERY`], so that no query grows with their number.
    pub async fn fired(&self, alert_ids: &[String]) -> Result<BTreeSet<String>, SinkError> {
        let mut fired = BTreeSet::new();
        for chunk in alert_ids.chunks(IDS_PER_QUERY) {
            let query = self.client.query("SELECT DISTINCT alert_id FROM alerts WHERE has(?, alert_id)").bind(chunk);
            let rows: Vec<String> = bounded(READ_TIMEOUT, query.fetch_all()).await?;
            fired.extend(rows);
        }
        Ok(fired)
    }

    /// The scopes `rule` fired for at or after `since` (epoch seconds): those cooling down.
    pub async fn fired_scopes(&self, rule: &str, since: i64) -> Result<BTreeSet<String>, SinkError> {
        let query = self
            .client
            .query("SELECT DISTINCT scope FROM alerts WHERE kind = 'rule' AND source = ? AND fired_at >= toDateTime(?)")
            .bind(rule)
            .bind(since);
        let rows: Vec<String> = bounded(READ_TIMEOUT, query.fetch_all()).await?;
        Ok(rows.into_iter().collect())
    }

    /// Writes new versions of alert rows.
    pub async fn record(&self, rows: &[AlertRow]) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert =
            self.client.insert::<AlertRow>("alerts").await?.with_timeouts(Some(READ_TIMEOUT), Some(READ_TIMEOUT));
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Up to `limit` pending deliveries to `webhook` whose next attempt is due at `now`, the
    /// longest due first.
    pub async fn due(&self, webhook: &str, now: u32, limit: usize) -> Result<Vec<AlertRow>, SinkError> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts FINAL WHERE delivery_state = ? AND webhook = ? \
             AND next_attempt_at <= toDateTime(?) ORDER BY next_attempt_at, fired_at LIMIT ?"
        );
        let query =
            self.client.query(&sql).bind(DeliveryState::Pending.as_str()).bind(webhook).bind(now).bind(limit as u64);
        bounded(READ_TIMEOUT, query.fetch_all::<AlertRow>()).await
    }

    /// Up to `limit` pending deliveries to webhooks other than `configured` (removed from the
    /// configuration since the alert fired).
    pub async fn orphaned(&self, configured: &[String], limit: usize) -> Result<Vec<AlertRow>, SinkError> {
        // An empty array literal has no element type on ClickHouse 18.16: leave the filter out.
        let filter = if configured.is_empty() { "" } else { " AND NOT has(?, webhook)" };
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts FINAL WHERE delivery_state = ?{filter} ORDER BY fired_at LIMIT ?"
        );
        let mut query = self.client.query(&sql).bind(DeliveryState::Pending.as_str());
        if !configured.is_empty() {
            query = query.bind(configured);
        }
        bounded(READ_TIMEOUT, query.bind(limit as u64).fetch_all::<AlertRow>()).await
    }

    /// Up to `limit` budget alerts sent to one of `webhooks` that no resolve names yet (a
    /// resolve's `source` is the id of the alert it resolves), the oldest periods first.
    pub async fn unresolved(&self, webhooks: &[String], limit: usize) -> Result<Vec<AlertRow>, SinkError> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts FINAL WHERE kind = 'budget' AND has(?, webhook) \
             AND alert_id NOT IN (SELECT source FROM alerts WHERE kind = 'resolve') ORDER BY period_start, alert_id LIMIT ?"
        );
        let query = self.client.query(&sql).bind(webhooks).bind(limit as u64);
        bounded(READ_TIMEOUT, query.fetch_all::<AlertRow>()).await
    }
}

/// ` AND column = ?…` for every dimension the scope fixes, and the values to bind.
pub(crate) fn scope_filter(scope: &Scope) -> (String, Vec<String>) {
    let mut filter = String::new();
    let mut values = Vec::new();
    let mut exact = |column: &str, value: &Option<String>| {
        if let Some(value) = value {
            filter.push_str(&format!(" AND {column} = ?"));
            values.push(value.clone());
        }
    };
    exact("tenant", &scope.tenant);
    exact("prompt_version", &scope.prompt_version);
    exact("provider", &scope.provider);
    exact("model", &scope.model);
    exact("environment", &scope.environment);
    exact("data_mode", &scope.data_mode.map(|m| m.as_str().to_string()));
    match &scope.endpoint_tag {
        Some(TagMatch::Exact(tag)) => {
            filter.push_str(" AND endpoint_tag = ?");
            values.push(tag.clone());
        }
        Some(TagMatch::Prefix(prefix)) => {
            filter.push_str(" AND startsWith(endpoint_tag, ?)");
            values.push(prefix.clone());
        }
        None => {}
    }
    (filter, values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_states_keep_their_stored_names() {
        let names: Vec<&str> =
            [DeliveryState::Pending, DeliveryState::Delivered, DeliveryState::Failed, DeliveryState::NoWebhook]
                .iter()
                .map(|state| state.as_str())
                .collect();
        assert_eq!(names, ["pending", "delivered", "failed", "no_webhook"]);
        for name in names {
            assert_eq!(DeliveryState::parse(name).map(DeliveryState::as_str), Some(name));
        }
        assert_eq!(DeliveryState::parse("gave_up"), None);
    }
}
