//! The alerts a budget's status calls for: one per threshold its spend has reached, identified
//! by (budget, period start, threshold), so that the outbox records each once per period
//! whatever the restarts, replays or changes of evaluator.

use chrono::{DateTime, Utc};
use costline_core::budget::AlertId;
use serde_json::json;

use crate::outbox::{AlertKind, FiredAlert};
use crate::status::BudgetStatus;

/// The alert's line for people: money in cents, the period and the scope in words; the exact
/// decimals are the body's fields. E.g. `Budget 'checkout monthly' for tenant acme, endpoint
/// checkout.ai_summary: $5.01 of $5.00 (100 %) this month; threshold 100 %`.
pub fn summary(status: &BudgetStatus, threshold: u32) -> String {
    let budget = &status.budget;
    // The percentage spent, rounded down: it never shows 100 % before the limit is reached.
    let percent = if budget.limit.0 > 0 { status.spend.0 * 100 / budget.limit.0 } else { 0 };
    format!(
        "Budget '{}' for {}: {} of {} ({percent} %) {}; threshold {threshold} %",
        budget.id,
        budget.scope.in_words(),
        status.spend.to_cents_display(),
        budget.limit.to_cents_display(),
        budget.period.current_in_words(),
    )
}

/// The alerts for every threshold `status` has reached, fired at `now`.
pub fn budget_alerts(status: &BudgetStatus, now: DateTime<Utc>) -> Vec<FiredAlert> {
    let budget = &status.budget;
    let (spend, limit) = (status.spend.to_usd_string(), budget.limit.to_usd_string());
    let scope = budget.scope.to_string();
    budget
        .crossed(status.spend)
        .into_iter()
        .map(|threshold| {
            let id = AlertId::budget(&budget.id, status.period_start, threshold);
            let summary = summary(status, threshold);
            let body = json!({
                "alert_id": id.0, "kind": AlertKind::Budget.as_str(), "budget": budget.id, "rule": null,
                "scope": scope,
                "period": {"start": status.period_start.to_rfc3339(), "end": status.period_end.to_rfc3339()},
                "threshold_percent": threshold, "spend_usd": spend, "limit_usd": limit,
                "ratio": budget.ratio(status.spend), "state": status.state.as_str(),
                "as_of": status.as_of_rfc3339(), "fired_at": now.to_rfc3339(), "summary": summary,
            });
            FiredAlert {
                id,
                kind: AlertKind::Budget,
                source: budget.id.clone(),
                scope: scope.clone(),
                period_start: status.period_start.timestamp(),
                threshold_percent: threshold,
                spend: status.spend,
                limit: budget.limit,
                value: budget.ratio(status.spend),
                summary,
                body,
                webhooks: budget.webhooks.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use costline_core::budget::{Budget, OnExceeded, Period, Scope};
    use costline_core::money::PICO_PER_USD;
    use costline_core::PicoUsd;

    #[test]
    fn each_reached_threshold_is_one_alert_with_a_stable_id() {
        let budget = Budget {
            id: "acme".into(),
            scope: Scope { tenant: Some("acme".into()), ..Scope::default() },
            period: Period::Month,
            zone: chrono_tz::UTC,
            limit: PicoUsd(100 * PICO_PER_USD),
            thresholds: vec![50, 80, 100],
            webhooks: vec!["oncall".into()],
            on_exceeded: OnExceeded::Warn,
        };
        let start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).single().expect("a valid date");
        let status = BudgetStatus {
            state: budget.state(PicoUsd(85 * PICO_PER_USD)),
            budget,
            period_start: start,
            period_end: Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).single().expect("a valid date"),
            spend: PicoUsd(85 * PICO_PER_USD),
            as_of: 1_764_000_000,
        };
        let alerts = budget_alerts(&status, start);
        let thresholds: Vec<u32> = alerts.iter().map(|a| a.threshold_percent).collect();
        assert_eq!(thresholds, [50, 80]);
        assert_eq!(alerts[1].id, AlertId::budget("acme", start, 80));
        assert_eq!(alerts[1].scope, "tenant=acme,environment=prod,data_mode=real");
        assert_eq!(alerts[1].body["scope"], "tenant=acme,environment=prod,data_mode=real");
        assert_eq!(alerts[1].body["state"], "warning");
        assert_eq!(alerts[1].body["spend_usd"], "85.000000000000");
        assert_eq!(
            alerts[1].summary,
            "Budget 'acme' for tenant acme: $85.00 of $100.00 (85 %) this month; threshold 80 %"
        );
        assert_eq!(alerts[1].body["summary"], alerts[1].summary);
        assert_eq!(alerts[1].body["limit_usd"], "100.000000000000");
    }
}
