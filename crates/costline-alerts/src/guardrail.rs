//! The guardrail check: which budgets cover a call an app is about to make, and whether it may
//! make it. Answered from the latest [`Snapshot`] in memory, never from ClickHouse, so an app
//! can ask before every call.
//!
//! A call is refused (`allow: false`) only by a covering budget that is exceeded and configured
//! `on_exceeded = "block"`; warn-only budgets are reported but never refuse. A budget whose
//! period ended after the snapshot was read has reset: it no longer refuses, even before the
//! next read shows its new period.

use chrono::{DateTime, Utc};
use costline_core::budget::{BudgetState, Call, OnExceeded};

use crate::status::{BudgetStatus, Snapshot};

/// The answer for one call.
#[derive(Debug)]
pub struct Verdict<'a> {
    /// Every budget whose scope covers the call, in configuration order.
    pub covering: Vec<&'a BudgetStatus>,
    pub allow: bool,
    /// When the call is refused: the end of the last period among the refusing budgets, when
    /// every one of them has reset.
    pub resets_at: Option<DateTime<Utc>>,
}

/// The verdict for `call` at `now` from `snapshot`.
pub fn check<'a>(snapshot: &'a Snapshot, call: &Call, now: DateTime<Utc>) -> Verdict<'a> {
    let covering: Vec<&BudgetStatus> = snapshot.statuses.iter().filter(|s| s.budget.scope.covers(call)).collect();
    let resets_at = covering
        .iter()
        .filter(|s| s.budget.on_exceeded == OnExceeded::Block && s.state == BudgetState::Exceeded && now < s.period_end)
        .map(|s| s.period_end)
        .max();
    Verdict { allow: resets_at.is_none(), covering, resets_at }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use costline_core::budget::{Budget, Period, Scope, TagMatch};
    use costline_core::money::PICO_PER_USD;
    use costline_core::{DataMode, PicoUsd};

    fn status(id: &str, scope: Scope, period: Period, spend_usd: i128, on_exceeded: OnExceeded) -> BudgetStatus {
        let budget = Budget {
            id: id.into(),
            scope,
            period,
            zone: chrono_tz::UTC,
            limit: PicoUsd(10 * PICO_PER_USD),
            thresholds: vec![50, 80, 100],
            webhooks: vec![],
            on_exceeded,
        };
        let (period_start, period_end) = period.bounds(at(12), chrono_tz::UTC);
        let spend = PicoUsd(spend_usd * PICO_PER_USD);
        BudgetStatus { state: budget.state(spend), budget, period_start, period_end, spend, as_of: 0 }
    }

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, hour, 0, 0).single().expect("a valid time")
    }

    fn call(tenant: &str, endpoint_tag: &str) -> Call {
        Call {
            tenant: tenant.into(),
            endpoint_tag: endpoint_tag.into(),
            prompt_version: "v1".into(),
            provider: "openai".into(),
            model: "gpt-4o".into(),
            environment: "prod".into(),
            data_mode: DataMode::Real,
        }
    }

    fn snapshot() -> Snapshot {
        let tenant = |t: &str| Scope { tenant: Some(t.into()), ..Scope::default() };
        let checkout = Scope { endpoint_tag: Some(TagMatch::parse("checkout.*")), ..Scope::default() };
        Snapshot {
            statuses: vec![
                status("acme-day", tenant("acme"), Period::Day, 11, OnExceeded::Block),
                status("acme-month", tenant("acme"), Period::Month, 12, OnExceeded::Block),
                status("checkout", checkout, Period::Month, 20, OnExceeded::Warn),
                status("globex", tenant("globex"), Period::Month, 5, OnExceeded::Block),
            ],
            read_at: at(12),
        }
    }

    fn ids(verdict: &Verdict) -> Vec<String> {
        verdict.covering.iter().map(|s| s.budget.id.clone()).collect()
    }

    #[test]
    fn an_exceeded_blocking_budget_refuses_until_its_last_period_resets() {
        let snapshot = snapshot();
        let verdict = check(&snapshot, &call("acme", "checkout.summary"), at(13));
        assert_eq!(ids(&verdict), ["acme-day", "acme-month", "checkout"]);
        assert!(!verdict.allow);
        assert_eq!(verdict.resets_at, Some(Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()));
    }

    #[test]
    fn warn_only_and_unexceeded_budgets_allow() {
        let snapshot = snapshot();
        let verdict = check(&snapshot, &call("globex", "checkout.summary"), at(13));
        assert_eq!(ids(&verdict), ["checkout", "globex"]);
        assert!(verdict.allow, "checkout is exceeded but warns only; globex is at 50 %");
        assert_eq!(verdict.resets_at, None);
        let verdict = check(&snapshot, &call("initech", "search.rerank"), at(13));
        assert!(verdict.covering.is_empty() && verdict.allow);
    }

    #[test]
    fn a_period_that_ended_after_the_read_no_longer_refuses() {
        let mut snapshot = snapshot();
        snapshot.statuses.retain(|s| s.budget.id == "acme-day");
        let tomorrow = Utc.with_ymd_and_hms(2026, 12, 8, 0, 0, 1).unwrap();
        assert!(!check(&snapshot, &call("acme", "search"), at(23)).allow);
        let verdict = check(&snapshot, &call("acme", "search"), tomorrow);
        assert!(verdict.allow);
        assert_eq!(ids(&verdict), ["acme-day"]);
    }
}
