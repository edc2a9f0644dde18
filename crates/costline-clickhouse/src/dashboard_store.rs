//! What the built-in dashboard page shows, read from the rollup state tables (real, prod).

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use crate::sink::{bounded, ClickHouseTarget, SinkError};

/// Longest wait for one dashboard query.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct HourCost {
    pub hour: u32,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct EndpointCost {
    pub endpoint_tag: String,
    pub requests: u64,
    pub cost_usd: f64,
    pub retry_ratio: f64,
}

#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct VersionCost {
    pub prompt_version: String,
    pub requests: u64,
    pub cost_per_request_usd: f64,
    pub retry_ratio: f64,
}

/// Reads for the dashboard.
#[derive(Clone)]
pub struct DashboardStore {
    client: Client,
}

const REAL_PROD: &str = "endpoint_tag != '' AND data_mode = 'real' AND environment = 'prod'";

impl DashboardStore {
    pub fn new(target: &ClickHouseTarget) -> DashboardStore {
        DashboardStore { client: target.client() }
    }

    /// Cost per hour from `since` (epoch seconds).
    pub async fn cost_per_hour(&self, since: i64) -> Result<Vec<HourCost>, SinkError> {
        let sql = format!(
            "SELECT toUInt32(window_start) AS hour, toFloat64(sumMerge(cost_usd_state)) AS cost_usd FROM usage_hour_state \
             WHERE window_start >= toDateTime(?) AND {REAL_PROD} GROUP BY window_start ORDER BY window_start"
        );
        bounded(READ_TIMEOUT, self.client.query(&sql).bind(since).fetch_all()).await
    }

    /// Endpoints by cost from `since`.
    pub async fn top_endpoints(&self, since: i64, limit: u32) -> Result<Vec<EndpointCost>, SinkError> {
        let sql = format!(
            "SELECT endpoint_tag, sumMerge(requests_state) AS requests, toFloat64(sumMerge(cost_usd_state)) AS cost_usd, \
             (sumMerge(attempts_state) - sumMerge(requests_state)) / greatest(sumMerge(requests_state), 1) AS retry_ratio \
             FROM usage_hour_state WHERE window_start >= toDateTime(?) AND {REAL_PROD} \
             GROUP BY endpoint_tag ORDER BY cost_usd DESC LIMIT ?"
        );
        bounded(READ_TIMEOUT, self.client.query(&sql).bind(since).bind(limit).fetch_all()).await
    }

    /// Prompt versions of `endpoint` from `since`.
    pub async fn prompt_versions(&self, endpoint: &str, since: i64) -> Result<Vec<VersionCost>, SinkError> {
        let sql = format!(
            "SELECT if(prompt_version = '', '(untagged)', prompt_version) AS prompt_version, \
             sumMerge(requests_state) AS requests, \
             toFloat64(sumMerge(cost_usd_state)) / greatest(sumMerge(requests_state), 1) AS cost_per_request_usd, \
             (sumMerge(attempts_state) - sumMerge(requests_state)) / greatest(sumMerge(requests_state), 1) AS retry_ratio \
             FROM usage_hour_state WHERE endpoint_tag = ? AND window_start >= toDateTime(?) AND {REAL_PROD} \
             GROUP BY prompt_version ORDER BY prompt_version"
        );
        bounded(READ_TIMEOUT, self.client.query(&sql).bind(endpoint).bind(since).fetch_all()).await
    }
}
