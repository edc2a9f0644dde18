//! The alerts the rules find: each enabled rule reads its aggregates from ClickHouse, judges
//! them with the pure rules of `costline_core::rules`, and its findings less the scopes cooling
//! down are capped to `max_alerts_per_rule` per cooldown (`rules::cap`). Rule scopes are mostly
//! values the senders choose (model names, endpoint tags), so a burst of new names can neither
//! page once per name nor grow a query.
//!
//! A rule alert is identified by (rule, scope, minute fired); a scope that fired stays quiet for
//! the cooldown while its condition holds.

use anyhow::Context;
use chrono::{TimeZone, Utc};
use costline_clickhouse::alert_store::AlertStore;
use costline_core::budget::AlertId;
use costline_core::rules::{self, ConfigDrift, CostSpike, Finding, RetryStorm};
use costline_core::PicoUsd;
use serde_json::json;

use crate::outbox::{AlertKind, FiredAlert};

/// Which rules run and over which windows (`[alerts]` and `[alerts.<rule>]`); `None`: disabled.
#[derive(Debug, Clone)]
pub struct RuleSettings {
    /// The rule, and the sliding window it looks at.
    pub retry_storm: Option<(RetryStorm, u32)>,
    /// The rule, and how many trailing hours make the average.
    pub cost_spike: Option<(CostSpike, u32)>,
    /// The rule, and how many hours before the current one are "known".
    pub config_drift: Option<(ConfigDrift, u32)>,
    /// How far back unpriced attempts are looked for.
    pub unpriced_model_window_secs: Option<u32>,
    pub cooldown_secs: u32,
    pub max_alerts_per_rule: usize,
    /// Where rule alerts go.
    pub webhooks: Vec<String>,
}

/// The rules and what they read.
pub struct RuleChecks {
    store: AlertStore,
    settings: RuleSettings,
}

impl RuleChecks {
    pub fn new(store: AlertStore, settings: RuleSettings) -> RuleChecks {
        RuleChecks { store, settings }
    }

    /// Every rule's alerts at `now` (epoch seconds), each rule's capped.
    pub async fn alerts(&self, now: i64) -> anyhow::Result<Vec<FiredAlert>> {
        let minute = now / 60 * 60;
        let findings = self.findings(now).await?;
        Ok(findings.into_iter().map(|finding| rule_alert(finding, minute, &self.settings.webhooks)).collect())
    }

    async fn findings(&self, now: i64) -> anyhow::Result<Vec<Finding>> {
        let s = &self.settings;
        let mut findings = Vec::new();
        if let Some((rule, window_secs)) = &s.retry_storm {
            let window = self.store.retries_by_endpoint(now - i64::from(*window_secs)).await?;
            findings.extend(self.capped(rule.evaluate(&window, u64::from(*window_secs)), now).await?);
        }
        if let Some((rule, trailing_hours)) = &s.cost_spike {
            let last_hour = now / 3600 * 3600 - 3600;
            let hours = self.store.hourly_costs(last_hour, i64::from(*trailing_hours)).await?;
            findings.extend(self.capped(rule.evaluate(&hours), now).await?);
        }
        if let Some((rule, lookback_hours)) = &s.config_drift {
            let recent_start = now / 3600 * 3600 - 3600;
            let known_start = recent_start - i64::from(*lookback_hours) * 3600;
            let known = self.store.model_uses(known_start, recent_start).await?;
            let recent = self.store.model_uses(recent_start, now + 3600).await?;
            findings.extend(self.capped(rule.evaluate(recent.keys(), &known), now).await?);
        }
        if let Some(window_secs) = s.unpriced_model_window_secs {
            let unpriced = self.store.unpriced_models(now - i64::from(window_secs)).await?;
            findings.extend(self.capped(rules::unpriced_models(&unpriced), now).await?);
        }
        Ok(findings)
    }

    /// One rule's findings less the scopes cooling down, capped ([`rules::cap`]).
    async fn capped(&self, findings: Vec<Finding>, now: i64) -> anyhow::Result<Vec<Finding>> {
        let Some(rule) = findings.first().map(|f| f.rule) else { return Ok(findings) };
        // Cooling down: fired less than `cooldown_secs` ago.
        let since = now - i64::from(self.settings.cooldown_secs) + 1;
        let cooling = self.store.fired_scopes(rule, since).await.with_context(|| format!("rule {rule}"))?;
        Ok(rules::cap(findings, &cooling, self.settings.max_alerts_per_rule))
    }
}

/// The alert for `finding`, fired in the minute starting at `minute` (epoch seconds).
fn rule_alert(finding: Finding, minute: i64, webhooks: &[String]) -> FiredAlert {
    let id = AlertId::rule(finding.rule, &finding.scope, minute);
    let body = json!({
        "alert_id": id.0, "kind": AlertKind::Rule.as_str(), "budget": null, "rule": finding.rule,
        "scope": finding.scope,
        "period": {"start": Utc.timestamp_opt(minute, 0).single().map(|t| t.to_rfc3339()), "end": null},
        "threshold": finding.limit, "value": finding.value, "fired_at": Utc::now().to_rfc3339(),
        "summary": finding.summary,
    });
    FiredAlert {
        id,
        kind: AlertKind::Rule,
        source: finding.rule.to_string(),
        scope: finding.scope,
        period_start: minute,
        threshold_percent: 0,
        spend: PicoUsd::ZERO,
        limit: PicoUsd::ZERO,
        value: finding.value,
        summary: finding.summary,
        body,
        webhooks: webhooks.to_vec(),
    }
}
