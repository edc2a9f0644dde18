//! Resolving budget alerts at PagerDuty: a budget alert opens an incident, and nothing makes it
//! false again within its period (spend only grows), so it is resolved when the period ends.
//!
//! A resolve is an alert of its own in the outbox (`kind` = `resolve`, `source` = the id of the
//! alert it resolves), sent to the webhook the budget alert went to, so it is recorded once and
//! delivered at least once like any alert: its id is derived from the resolved alert's, looked
//! up before it is recorded, and its body names the resolved alert, whose id PagerDuty gets as
//! the `dedup_key`. It is recorded only once the budget alert's delivery is over (`delivered`
//! or `failed`): a resolve that overtook a trigger still being retried would leave the incident
//! the trigger then opens open for good.

use chrono::{DateTime, Utc};
use costline_clickhouse::alert_store::{AlertRow, DeliveryState};
use costline_core::budget::AlertId;
use costline_core::PicoUsd;
use serde_json::{json, Value};

use crate::outbox::{AlertKind, FiredAlert};

/// The resolve of budget alert `trigger` (one row: one alert and one webhook), if its period
/// ended before `now` and its delivery is over. The period's end is read from the alert's
/// stored body, so a budget changed or removed since keeps the period it fired in.
pub fn resolve(trigger: &AlertRow, now: DateTime<Utc>) -> Option<FiredAlert> {
    let over = matches!(trigger.delivery_state, DeliveryState::Delivered | DeliveryState::Failed);
    if trigger.kind != AlertKind::Budget.as_str() || !over {
        return None;
    }
    let body: Value = serde_json::from_str(&trigger.body).ok()?;
    let period = body.get("period")?;
    let end = DateTime::parse_from_rfc3339(period.get("end")?.as_str()?).ok()?;
    if end > now {
        return None;
    }
    let id = AlertId::resolve(&trigger.alert_id);
    let summary = format!(
        "Budget '{}': the period of its {} % alert ended at {}; resolved",
        trigger.source,
        trigger.threshold_percent,
        end.with_timezone(&Utc).format("%Y-%m-%d %H:%M UTC")
    );
    let body = json!({
        "alert_id": id.0, "kind": AlertKind::Resolve.as_str(), "resolves": trigger.alert_id,
        "budget": trigger.source, "rule": null, "scope": trigger.scope, "period": period,
        "threshold_percent": trigger.threshold_percent, "fired_at": now.to_rfc3339(), "summary": summary,
    });
    Some(FiredAlert {
        id,
        kind: AlertKind::Resolve,
        source: trigger.alert_id.clone(),
        scope: trigger.scope.clone(),
        period_start: i64::from(trigger.period_start),
        threshold_percent: trigger.threshold_percent,
        spend: PicoUsd(trigger.spend_usd),
        limit: PicoUsd(trigger.limit_usd),
        value: 0.0,
        summary,
        body,
        webhooks: vec![trigger.webhook.clone()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(state: DeliveryState, end: &str) -> AlertRow {
        let body =
            json!({"alert_id": "al_1", "kind": "budget", "period": {"start": "2026-11-01T00:00:00+00:00", "end": end}});
        AlertRow {
            alert_id: "al_1".into(),
            webhook: "pd".into(),
            kind: "budget".into(),
            source: "acme".into(),
            scope: "tenant=acme".into(),
            period_start: 1_793_491_200,
            threshold_percent: 80,
            spend_usd: 85,
            limit_usd: 100,
            value: 0.85,
            fired_at: 1_793_500_000,
            summary: "s".into(),
            body: body.to_string(),
            delivery_state: state,
            attempts: 1,
            next_attempt_at: 0,
            last_error: String::new(),
            updated_at: 0,
            version: 2,
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn an_alert_is_resolved_once_its_period_ended_and_its_delivery_is_over() {
        let end = "2026-12-01T00:00:00+00:00";
        assert!(resolve(&trigger(DeliveryState::Delivered, end), at("2026-11-30T23:59:59Z")).is_none());
        assert!(resolve(&trigger(DeliveryState::Pending, end), at("2026-12-02T00:00:00Z")).is_none());
        assert!(resolve(&trigger(DeliveryState::Failed, end), at("2026-12-01T00:00:00Z")).is_some());
        let resolve = resolve(&trigger(DeliveryState::Delivered, end), at("2026-12-01T00:00:01Z")).unwrap();
        assert_eq!(resolve.id, AlertId::resolve("al_1"));
        assert_eq!((resolve.kind, resolve.source.as_str()), (AlertKind::Resolve, "al_1"));
        assert_eq!(resolve.webhooks, ["pd"]);
        assert_eq!(resolve.body["resolves"], "al_1");
        assert_eq!(
            resolve.summary,
            "Budget 'acme': the period of its 80 % alert ended at 2026-12-01 00:00 UTC; resolved"
        );
    }

    #[test]
    fn only_budget_alerts_with_a_readable_period_are_resolved() {
        let mut rule = trigger(DeliveryState::Delivered, "2026-12-01T00:00:00+00:00");
        rule.kind = "rule".into();
        assert!(resolve(&rule, at("2027-01-01T00:00:00Z")).is_none());
        assert!(resolve(&trigger(DeliveryState::Delivered, "soon"), at("2027-01-01T00:00:00Z")).is_none());
    }
}
