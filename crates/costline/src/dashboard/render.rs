//! The JSON the page draws, made from the store's rows. Money is exact (decimal strings with
//! 12 decimals, as the budget API gives it); ratios are floats; the page rounds for display.
//!
//! The overview pivots the hourly rows: one entry per hour of the period (hours without
//! traffic included, so the time axis is even), each with its cost per series, where the
//! series are the top endpoints by cost over the period, biggest first, then `other`.

use std::collections::BTreeMap;

use costline_clickhouse::dashboard_store::{
    DashboardFilter, HourEndpointUsage, RejectedReason, TrafficKind, UnpricedModel, VersionSide,
};
use costline_core::PicoUsd;
use serde_json::{json, Value};

use super::params::{rfc3339, ANY};

/// Requests, attempts and cost of some traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Usage {
    requests: u64,
    attempts: u64,
    cost: PicoUsd,
}

impl Usage {
    fn add(&mut self, row: &HourEndpointUsage) {
        self.requests += row.requests;
        self.attempts += row.attempts;
        self.cost += PicoUsd(row.cost_pico_usd);
    }

    /// `retries = attempts − requests` (never negative: a request's first attempt is counted
    /// with it) and `retry_ratio = retries / requests`, null without requests.
    fn json(self) -> Value {
        let retries = self.attempts.saturating_sub(self.requests);
        let ratio = (self.requests > 0).then(|| retries as f64 / self.requests as f64);
        json!({"requests": self.requests, "attempts": self.attempts, "retries": retries, "retry_ratio": ratio,
               "cost_usd": self.cost.to_usd_string()})
    }
}

/// The period and filters a response covers.
fn echo(filter: &DashboardFilter) -> Value {
    json!({
        "from": rfc3339(filter.from),
        "to": rfc3339(filter.to),
        "environment": filter.scope.environment.as_deref().unwrap_or(ANY),
        "data_mode": filter.scope.data_mode.map_or(ANY, |m| m.as_str()),
    })
}

/// `GET /v1/dashboard`.
pub fn overview(
    filter: &DashboardFilter,
    hourly: &[HourEndpointUsage],
    unpriced: &[UnpricedModel],
    rejected: &[RejectedReason],
    kinds: &[TrafficKind],
) -> Value {
    // Series: the top endpoints ("" is the others together) by cost, biggest first, then other.
    let mut series: BTreeMap<&str, Usage> = BTreeMap::new();
    let mut hours: BTreeMap<i64, Vec<&HourEndpointUsage>> = BTreeMap::new();
    let mut total = Usage::default();
    for row in hourly {
        series.entry(&row.endpoint_tag).or_default().add(row);
        hours.entry(i64::from(row.hour)).or_default().push(row);
        total.add(row);
    }
    let mut order: Vec<(&str, Usage)> = series.into_iter().collect();
    order.sort_by(|(a, ua), (b, ub)| (a.is_empty(), ub.cost, a).cmp(&(b.is_empty(), ua.cost, b)));
    let endpoints: Vec<Value> = order
        .iter()
        .map(|(tag, usage)| {
            let mut entry = usage.json();
            entry["endpoint"] = if tag.is_empty() { Value::Null } else { json!(tag) };
            entry["other"] = json!(tag.is_empty());
            entry
        })
        .collect();
    let hours: Vec<Value> = (filter.from..filter.to)
        .step_by(3600)
        .map(|start| {
            let rows = hours.get(&start).map_or(&[][..], Vec::as_slice);
            let mut usage = Usage::default();
            rows.iter().for_each(|row| usage.add(row));
            let by_series: Vec<String> = order
                .iter()
                .map(|(tag, _)| {
                    let cost = rows.iter().filter(|r| r.endpoint_tag == *tag).map(|r| PicoUsd(r.cost_pico_usd));
                    cost.fold(PicoUsd::ZERO, |a, b| a + b).to_usd_string()
                })
                .collect();
            let mut entry = usage.json();
            entry["start"] = json!(rfc3339(start));
            entry["cost_by_endpoint_usd"] = json!(by_series);
            entry
        })
        .collect();
    let mut environments: Vec<&str> = kinds.iter().map(|k| k.environment.as_str()).collect();
    let mut data_modes: Vec<&str> = kinds.iter().map(|k| k.data_mode.as_str()).collect();
    for values in [&mut environments, &mut data_modes] {
        values.sort_unstable();
        values.dedup();
    }
    json!({
        "period": echo(filter),
        "total": total.json(),
        "endpoints": endpoints,
        "hours": hours,
        "unpriced_models": unpriced.iter().map(|m| json!({"provider": m.provider, "model": m.model,
            "unpriced_attempts": m.unpriced_attempts, "attempts": m.attempts})).collect::<Vec<_>>(),
        "rejected": {
            "records": rejected.iter().map(|r| r.records).sum::<u64>(),
            "by_reason": rejected.iter().map(|r| json!({"reason_code": r.reason_code, "records": r.records,
                "example": r.example})).collect::<Vec<_>>(),
        },
        "filter_values": {"environments": environments, "data_modes": data_modes},
    })
}

/// `GET /v1/dashboard/prompt-versions`.
pub fn versions(filter: &DashboardFilter, endpoint: &str, split: i64, rows: &[VersionSide]) -> Value {
    let versions: Vec<Value> = rows
        .iter()
        .map(|row| {
            let usage = Usage { requests: row.requests, attempts: row.attempts, cost: PicoUsd(row.cost_pico_usd) };
            let mut entry = usage.json();
            entry["prompt_version"] = json!(row.prompt_version);
            entry["side"] = json!(if row.before { "before" } else { "after" });
            entry["cost_per_request_usd"] = json!(per_request(usage.cost, row.requests).map(PicoUsd::to_usd_string));
            entry["latency_samples"] = json!(row.latency_samples);
            entry["latency_ms_p95"] = json!((row.latency_samples > 0).then_some(row.latency_ms_p95));
            entry
        })
        .collect();
    json!({"period": echo(filter), "endpoint": endpoint, "split": rfc3339(split), "versions": versions})
}

/// `cost / requests` to the nearest pico-USD (halves away from zero); `None` without requests.
fn per_request(cost: PicoUsd, requests: u64) -> Option<PicoUsd> {
    let requests = i128::from(requests);
    (requests > 0).then(|| {
        let (quotient, remainder) = (cost.0 / requests, cost.0 % requests);
        PicoUsd(quotient + (2 * remainder.abs() >= requests) as i128 * cost.0.signum())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use costline_core::budget::Scope;

    fn row(hour: u32, endpoint: &str, requests: u64, attempts: u64, cost: i128) -> HourEndpointUsage {
        HourEndpointUsage { hour, endpoint_tag: endpoint.into(), requests, attempts, cost_pico_usd: cost }
    }

    #[test]
    fn hours_are_pivoted_by_endpoint_with_other_last_and_empty_hours_kept() {
        let filter = DashboardFilter { from: 7200, to: 4 * 3600, scope: Scope::default() };
        let rows =
            [row(7200, "", 1, 1, 5), row(7200, "a", 2, 3, 10), row(7200, "b", 1, 1, 30), row(3 * 3600, "a", 4, 4, 1)];
        let body = overview(&filter, &rows, &[], &[], &[]);
        let names: Vec<&Value> = body["endpoints"].as_array().unwrap().iter().map(|e| &e["endpoint"]).collect();
        assert_eq!(names, [&json!("b"), &json!("a"), &Value::Null], "by cost, other last");
        let hours = body["hours"].as_array().unwrap();
        assert_eq!(hours.len(), 2);
        assert_eq!(hours[0]["start"], "1970-01-01T02:00:00Z");
        assert_eq!(hours[0]["cost_usd"], "0.000000000045");
        assert_eq!(hours[0]["cost_by_endpoint_usd"], json!(["0.000000000030", "0.000000000010", "0.000000000005"]));
        assert_eq!(hours[0]["retry_ratio"], json!(0.25));
        assert_eq!(hours[1]["cost_usd"], "0.000000000001");
        assert_eq!(body["total"]["requests"], 8);
        assert_eq!(body["endpoints"][1]["retries"], 1);
        assert_eq!(body["period"]["environment"], "prod");
    }

    #[test]
    fn an_hour_without_requests_has_no_retry_ratio() {
        let filter = DashboardFilter { from: 0, to: 3600, scope: Scope::default() };
        let body = overview(&filter, &[], &[], &[], &[]);
        assert_eq!(body["hours"][0]["retry_ratio"], Value::Null);
        assert_eq!(body["hours"][0]["cost_usd"], "0.000000000000");
    }

    #[test]
    fn cost_per_request_rounds_to_the_nearest_pico_usd() {
        assert_eq!(per_request(PicoUsd(10), 4), Some(PicoUsd(3)));
        assert_eq!(per_request(PicoUsd(10), 3), Some(PicoUsd(3)));
        assert_eq!(per_request(PicoUsd(11), 3), Some(PicoUsd(4)));
        assert_eq!(per_request(PicoUsd(-10), 4), Some(PicoUsd(-3)));
        assert_eq!(per_request(PicoUsd(10), 0), None);
    }
}
