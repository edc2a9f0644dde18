//! What the built-in dashboard shows, read from the hourly rollup state (`usage_hour_state`)
//! and `rejected_events`.
//!
//! Every read covers a period `[from, to)` of whole hours and a [`Scope`] (the dashboard's
//! environment and data mode filters, and an endpoint for the prompt versions): the scope's
//! values are bound, never spliced into the SQL. Money is read as the exact `Decimal(38, 12)`
//! sum (pico-USD). Latency quantiles of several rows come from their merged histogram states
//! (`sumMapMerge`), never from averaging the rows' quantiles.

use clickhouse::query::Query;
use clickhouse::{Client, Row};
use costline_core::budget::Scope;
use serde::Deserialize;

use crate::alert_store::scope_filter;
use crate::sink::{bounded, ClickHouseTarget, SinkError};

/// Longest wait for one dashboard query.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Most unpriced (provider, model) pairs listed.
const UNPRICED_MODELS_SHOWN: u32 = 50;

/// Most (environment, data mode) pairs listed as filter values.
const FILTER_VALUES_SHOWN: u32 = 200;

/// What the dashboard reads: `[from, to)` in epoch seconds (whole hours) and the traffic it
/// covers.
#[derive(Debug, Clone)]
pub struct DashboardFilter {
    pub from: i64,
    pub to: i64,
    pub scope: Scope,
}

/// One hour of one series of the stacked cost chart.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct HourEndpointUsage {
    /// Start of the hour, epoch seconds.
    pub hour: u32,
    /// One of the top endpoints, or `""` for all the others together.
    pub endpoint_tag: String,
    pub requests: u64,
    pub attempts: u64,
    pub cost_pico_usd: i128,
}

/// One prompt version of an endpoint on one side of the split.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct VersionSide {
    pub prompt_version: String,
    /// Whether its windows start before the split.
    pub before: bool,
    pub requests: u64,
    pub attempts: u64,
    pub cost_pico_usd: i128,
    /// Attempts that reported a latency.
    pub latency_samples: u64,
    /// From the merged histogram (0 without samples).
    pub latency_ms_p95: f64,
}

/// A model that was counted without a price.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct UnpricedModel {
    pub provider: String,
    pub model: String,
    pub unpriced_attempts: u64,
    pub attempts: u64,
}

/// Rejected records of one reason.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct RejectedReason {
    pub reason_code: String,
    pub records: u64,
    /// One of the reasons given, as an example.
    pub example: String,
}

/// One (environment, data mode) pair seen in the period.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct TrafficKind {
    pub environment: String,
    pub data_mode: String,
}

/// Reads for the dashboard.
#[derive(Clone)]
pub struct DashboardStore {
    client: Client,
}

/// The period and scope of a filter as a `WHERE` condition on a rollup state table, and what
/// binds its values in order.
struct Condition<'a> {
    sql: String,
    filter: &'a DashboardFilter,
    scope_values: Vec<String>,
}

impl Condition<'_> {
    fn of(filter: &DashboardFilter) -> Condition<'_> {
        let (scope, scope_values) = scope_filter(&filter.scope);
        let sql =
            format!("window_start >= toDateTime(?) AND window_start < toDateTime(?) AND endpoint_tag != ''{scope}");
        Condition { sql, filter, scope_values }
    }

    fn bind(&self, mut query: Query) -> Query {
        query = query.bind(self.filter.from).bind(self.filter.to);
        for value in &self.scope_values {
            query = query.bind(value);
        }
        query
    }
}

impl DashboardStore {
    pub fn new(target: &ClickHouseTarget) -> DashboardStore {
        DashboardStore { client: target.client() }
    }

    /// Requests, attempts and cost per hour and endpoint, with the `top` endpoints by cost over
    /// the whole period kept apart and the others summed as `""`. Hours without traffic have
    /// no rows.
    pub async fn hourly_by_endpoint(
        &self,
        filter: &DashboardFilter,
        top: u32,
    ) -> Result<Vec<HourEndpointUsage>, SinkError> {
        let condition = Condition::of(filter);
        let sql = format!(
            "SELECT toUInt32(window_start) AS hour, \
             if(endpoint_tag IN (SELECT endpoint_tag FROM usage_hour_state WHERE {0} \
                GROUP BY endpoint_tag ORDER BY sumMerge(cost_usd_state) DESC, endpoint_tag LIMIT ?), endpoint_tag, '') AS series, \
             sumMerge(requests_state) AS requests, sumMerge(attempts_state) AS attempts, \
             sumMerge(cost_usd_state) AS cost_pico_usd \
             FROM usage_hour_state WHERE {0} GROUP BY hour, series ORDER BY hour, series",
            condition.sql
        );
        let query = condition.bind(self.client.query(&sql)).bind(top);
        bounded(READ_TIMEOUT, condition.bind(query).fetch_all()).await
    }

    /// Each prompt version of the filter's endpoint before and after `split` (epoch seconds, a
    /// whole hour), with p95 latency from the merged histogram of its hours.
    pub async fn versions_around(&self, filter: &DashboardFilter, split: i64) -> Result<Vec<VersionSide>, SinkError> {
        let condition = Condition::of(filter);
        // The quantile is read off the merged histogram as the `usage_*` views do (002_rollup.sql):
        // the first bucket whose cumulative count reaches 95 %, at its geometric middle.
        let sql = format!(
            "SELECT prompt_version, before, requests, attempts, cost_pico_usd, latency_samples, \
             if(latency_samples = 0, 0, round(pow(1.04, p95_bucket - 0.5) * (p95_bucket > 0), 1)) AS latency_ms_p95 \
             FROM ( \
               SELECT prompt_version, before, requests, attempts, cost_pico_usd, latency_samples, \
               arrayElement(latency_buckets, arrayFirstIndex(c -> c >= 0.95 * latency_samples, latency_cumulative)) AS p95_bucket \
               FROM ( \
                 SELECT prompt_version, window_start < toDateTime(?) AS before, \
                 sumMerge(requests_state) AS requests, sumMerge(attempts_state) AS attempts, \
                 sumMerge(cost_usd_state) AS cost_pico_usd, \
                 sumMapMerge(latency_hist_state) AS latency_hist, \
                 tupleElement(latency_hist, 1) AS latency_buckets, \
                 arraySum(tupleElement(latency_hist, 2)) AS latency_samples, \
                 arrayCumSum(tupleElement(latency_hist, 2)) AS latency_cumulative \
                 FROM usage_hour_state WHERE {} GROUP BY prompt_version, before)) \
             ORDER BY prompt_version, before DESC",
            condition.sql
        );
        let query = self.client.query(&sql).bind(split);
        bounded(READ_TIMEOUT, condition.bind(query).fetch_all()).await
    }

    /// Models with unpriced attempts in the period, most first.
    pub async fn unpriced_models(&self, filter: &DashboardFilter) -> Result<Vec<UnpricedModel>, SinkError> {
        let condition = Condition::of(filter);
        let sql = format!(
            "SELECT provider, model, sumMerge(unpriced_attempts_state) AS unpriced_attempts, \
             sumMerge(attempts_state) AS attempts FROM usage_hour_state WHERE {} \
             GROUP BY provider, model HAVING sumMerge(unpriced_attempts_state) > 0 \
             ORDER BY unpriced_attempts DESC, provider, model LIMIT ?",
            condition.sql
        );
        let query = condition.bind(self.client.query(&sql)).bind(UNPRICED_MODELS_SHOWN);
        bounded(READ_TIMEOUT, query.fetch_all()).await
    }

    /// Records rejected with a Kafka record time in `[from, to)`, per reason, most first.
    /// Rejected records have no trustworthy environment or data mode: the scope does not apply.
    pub async fn rejected_by_reason(&self, from: i64, to: i64) -> Result<Vec<RejectedReason>, SinkError> {
        let query = self
            .client
            .query(
                "SELECT reason_code, count() AS records, any(reason) AS example FROM rejected_events \
                 WHERE record_time >= toDateTime(?) AND record_time < toDateTime(?) \
                 GROUP BY reason_code ORDER BY records DESC, reason_code",
            )
            .bind(from)
            .bind(to);
        bounded(READ_TIMEOUT, query.fetch_all()).await
    }

    /// The (environment, data mode) pairs with traffic in `[from, to)`: what the filters offer.
    pub async fn traffic_kinds(&self, from: i64, to: i64) -> Result<Vec<TrafficKind>, SinkError> {
        let query = self
            .client
            .query(
                "SELECT environment, data_mode FROM usage_hour_state \
                 WHERE window_start >= toDateTime(?) AND window_start < toDateTime(?) AND endpoint_tag != '' \
                 GROUP BY environment, data_mode ORDER BY environment, data_mode LIMIT ?",
            )
            .bind(from)
            .bind(to)
            .bind(FILTER_VALUES_SHOWN);
        bounded(READ_TIMEOUT, query.fetch_all()).await
    }
}
