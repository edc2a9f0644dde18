//! Budgets, alert rules and alert delivery.
//!
//! Spend is the global truth: it is read from ClickHouse, where every worker's flushes merge,
//! so it does not matter which worker evaluates. Exactly one does at a time: the owner of
//! partition 0 of the usage topic (the consumer group already guarantees that one member owns
//! it), so no extra election is needed. Its spend is complete up to `as_of`, the event time
//! every partition has been flushed to (a flush interval behind, by default 1 s).
//!
//! Each alert has a stable id (budget: budget + period start + threshold; rule: rule + scope +
//! the minute it fired). Before firing, the evaluator looks the id up in `alerts`, so a
//! threshold fires once per period whatever the restarts, replays or hand-overs. `alerts` is
//! also the outbox: a delivery is recorded `pending` before the first attempt, every attempt
//! writes a new version of the row, and whichever worker evaluates resumes what is pending.

pub mod api;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use costline_clickhouse::governance::{AlertRow, GovernanceStore};
use costline_clickhouse::ClickHouseTarget;
use costline_core::budget::{AlertId, Budget, BudgetState};
use costline_core::rules::{self, ConfigDrift, CostSpike, Finding, RetryStorm};
use costline_core::PicoUsd;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{AlertsConfig, Config, Secret};
use crate::metrics::Metrics;
use webhook::{Attempt, Webhook};

/// Where a budget stands now.
#[derive(Debug, Clone)]
pub struct BudgetStatus {
    pub budget: Budget,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub spend: PicoUsd,
    pub state: BudgetState,
    pub as_of: u32,
}

/// An alert about to fire.
struct NewAlert {
    id: AlertId,
    kind: &'static str,
    source: String,
    scope: String,
    period_start: i64,
    threshold_percent: u32,
    spend: PicoUsd,
    limit: PicoUsd,
    value: f64,
    summary: String,
    body: serde_json::Value,
    webhooks: Vec<String>,
}

pub struct Governance {
    store: GovernanceStore,
    topic: String,
    budgets: Vec<Budget>,
    webhooks: HashMap<String, Webhook>,
    config: AlertsConfig,
    /// Set while this worker owns partition 0.
    pub evaluator: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

fn now_secs() -> i64 {
    Utc::now().timestamp()
}

fn usd(amount: PicoUsd) -> String {
    amount.to_usd_string()
}

impl Governance {
    pub fn new(config: &Config, target: &ClickHouseTarget, metrics: Arc<Metrics>) -> anyhow::Result<Governance> {
        let budgets = (0..config.budgets.len()).map(|i| config.budget(i)).collect::<anyhow::Result<Vec<_>>>()?;
        let mut webhooks = HashMap::new();
        for hook in &config.webhooks {
            let secret = std::env::var(&hook.secret_env)
                .with_context(|| format!("webhook {}: environment variable {} is not set", hook.id, hook.secret_env))?;
            let webhook = Webhook::new(hook.url.clone(), Secret::new(secret), Duration::from_millis(hook.timeout_ms))?;
            webhooks.insert(hook.id.clone(), webhook);
        }
        Ok(Governance {
            store: GovernanceStore::new(target),
            topic: config.kafka.topic.clone(),
            budgets,
            webhooks,
            config: config.alerts.clone(),
            evaluator: Arc::new(AtomicBool::new(false)),
            metrics,
        })
    }

    /// Evaluates and delivers while this worker is the evaluator, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(Duration::from_millis(self.config.evaluate_interval_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if !self.evaluator.load(Ordering::Relaxed) {
                continue;
            }
            if let Err(e) = self.evaluate().await {
                warn!(error = format!("{e:#}"), "alert evaluation failed; will retry");
            }
            if let Err(e) = self.deliver_due().await {
                warn!(error = format!("{e:#}"), "alert delivery pass failed; will retry");
            }
        }
    }

    /// Every budget's status now.
    pub async fn statuses(&self) -> anyhow::Result<Vec<BudgetStatus>> {
        let as_of = self.store.as_of(&self.topic).await?;
        let now = Utc::now();
        let mut out = Vec::with_capacity(self.budgets.len());
        for budget in &self.budgets {
            let (period_start, period_end) = budget.period.bounds(now, budget.zone);
            let spend = self.store.spend(&budget.scope, period_start.timestamp(), period_end.timestamp()).await?;
            out.push(BudgetStatus {
                budget: budget.clone(),
                period_start,
                period_end,
                spend,
                state: budget.state(spend),
                as_of,
            });
        }
        Ok(out)
    }

    async fn evaluate(&self) -> anyhow::Result<()> {
        let mut alerts = Vec::new();
        for status in self.statuses().await? {
            let budget = &status.budget;
            for threshold in budget.crossed(status.spend) {
                let id = AlertId::budget(&budget.id, status.period_start, threshold);
                let summary = format!(
                    "Budget {} reached {threshold}% of ${} for the {:?} starting {}: ${} spent",
                    budget.id,
                    usd(budget.limit),
                    budget.period,
                    status.period_start.format("%Y-%m-%d"),
                    usd(status.spend)
                );
                let body = json!({
                    "alert_id": id.0, "kind": "budget", "budget": budget.id, "rule": null,
                    "scope": format!("{:?}", budget.scope),
                    "period": {"start": status.period_start.to_rfc3339(), "end": status.period_end.to_rfc3339()},
                    "threshold_percent": threshold, "spend_usd": usd(status.spend), "limit_usd": usd(budget.limit),
                    "ratio": budget.ratio(status.spend), "state": status.state.as_str(),
                    "as_of": Utc.timestamp_opt(i64::from(status.as_of), 0).single().map(|t| t.to_rfc3339()),
                    "fired_at": Utc::now().to_rfc3339(), "summary": summary,
                });
                alerts.push(NewAlert {
                    id,
                    kind: "budget",
                    source: budget.id.clone(),
                    scope: format!("{:?}", budget.scope),
                    period_start: status.period_start.timestamp(),
                    threshold_percent: threshold,
                    spend: status.spend,
                    limit: budget.limit,
                    value: budget.ratio(status.spend),
                    summary,
                    body,
                    webhooks: budget.webhooks.clone(),
                });
            }
        }
        for finding in self.rule_findings().await? {
            if let Some(last) = self.store.last_fired(finding.rule, &finding.scope).await? {
                if now_secs() - i64::from(last) < i64::from(self.config.cooldown_secs) {
                    continue;
                }
            }
            let minute = now_secs() / 60 * 60;
            let id = AlertId::rule(finding.rule, &finding.scope, minute);
            let body = json!({
                "alert_id": id.0, "kind": "rule", "budget": null, "rule": finding.rule, "scope": finding.scope,
                "period": {"start": Utc.timestamp_opt(minute, 0).single().map(|t| t.to_rfc3339()), "end": null},
                "threshold": finding.limit, "value": finding.value, "fired_at": Utc::now().to_rfc3339(),
                "summary": finding.summary,
            });
            alerts.push(NewAlert {
                id,
                kind: "rule",
                source: finding.rule.to_string(),
                scope: finding.scope,
                period_start: minute,
                threshold_percent: 0,
                spend: PicoUsd::ZERO,
                limit: PicoUsd::ZERO,
                value: finding.value,
                summary: finding.summary,
                body,
                webhooks: self.config.webhooks.clone(),
            });
        }
        self.fire(alerts).await
    }

    async fn rule_findings(&self) -> anyhow::Result<Vec<Finding>> {
        let now = now_secs();
        let c = &self.config;
        let mut findings = Vec::new();
        if c.retry_storm.enabled {
            let since = now - i64::from(c.retry_storm.window_secs);
            let window = self.store.retries_by_endpoint(since).await?;
            let rule =
                RetryStorm { max_ratio: c.retry_storm.max_retry_ratio, min_requests: c.retry_storm.min_requests };
            findings.extend(rule.evaluate(&window, u64::from(c.retry_storm.window_secs)));
        }
        if c.cost_spike.enabled {
            let last_hour = now / 3600 * 3600 - 3600;
            let hours = self.store.hourly_costs(last_hour, i64::from(c.cost_spike.trailing_hours)).await?;
            let rule = CostSpike {
                factor: c.cost_spike.factor,
                min_cost_usd: c.cost_spike.min_cost_usd,
                min_history_hours: c.cost_spike.min_history_hours,
            };
            findings.extend(rule.evaluate(&hours));
        }
        if c.config_drift.enabled {
            let recent_start = now / 3600 * 3600 - 3600;
            let known_start = recent_start - i64::from(c.config_drift.lookback_hours) * 3600;
            let known = self.store.model_uses(known_start, recent_start).await?;
            let recent = self.store.model_uses(recent_start, now + 3600).await?;
            let rule = ConfigDrift { min_history_hours: c.config_drift.min_history_hours };
            findings.extend(rule.evaluate(recent.keys(), &known));
        }
        if c.unpriced_model.enabled {
            let since = now - i64::from(c.unpriced_model.window_secs);
            findings.extend(rules::unpriced_models(&self.store.unpriced_models(since).await?));
        }
        Ok(findings)
    }

    /// Records alerts not fired before, one pending delivery per webhook.
    async fn fire(&self, alerts: Vec<NewAlert>) -> anyhow::Result<()> {
        let ids: Vec<String> = alerts.iter().map(|a| a.id.0.clone()).collect();
        let fired = self.store.fired(&ids).await?;
        let now = now_secs() as u32;
        let mut rows = Vec::new();
        for alert in alerts.into_iter().filter(|a| !fired.contains(&a.id.0)) {
            info!(alert_id = %alert.id.0, kind = alert.kind, source = %alert.source, "{}", alert.summary);
            self.metrics.alerts_fired.with_label_values(&[alert.kind]).inc();
            let hooks = if alert.webhooks.is_empty() { vec![String::new()] } else { alert.webhooks.clone() };
            for hook in hooks {
                rows.push(AlertRow {
                    alert_id: alert.id.0.clone(),
                    delivery_state: if hook.is_empty() { "no_webhook".into() } else { "pending".into() },
                    webhook: hook,
                    kind: alert.kind.into(),
                    source: alert.source.clone(),
                    scope: alert.scope.clone(),
                    period_start: alert.period_start.max(0) as u32,
                    threshold_percent: alert.threshold_percent,
                    spend_usd: alert.spend.0,
                    limit_usd: alert.limit.0,
                    value: alert.value,
                    fired_at: now,
                    summary: alert.summary.clone(),
                    body: alert.body.to_string(),
                    attempts: 0,
                    next_attempt_at: now,
                    last_error: String::new(),
                    updated_at: now,
                    version: 1,
                });
            }
        }
        Ok(self.store.record(&rows).await?)
    }

    /// Attempts every delivery that is due, recording the outcome of each.
    async fn deliver_due(&self) -> anyhow::Result<()> {
        let now = now_secs();
        let mut updates = Vec::new();
        for mut row in self.store.due(now as u32).await? {
            let Some(hook) = self.webhooks.get(&row.webhook) else {
                row.delivery_state = "failed".into();
                row.last_error = format!("webhook {:?} is no longer configured", row.webhook);
                updates.push(row);
                continue;
            };
            row.attempts += 1;
            let attempt = hook.deliver(&row.alert_id, &row.body, now).await;
            let result = match &attempt {
                Attempt::Delivered => "delivered",
                Attempt::Refused(_) => "refused",
                Attempt::Retry(_) if row.attempts >= self.config.max_attempts => "gave_up",
                Attempt::Retry(_) => "retry",
            };
            self.metrics.alert_deliveries.with_label_values(&[result]).inc();
            match attempt {
                Attempt::Delivered => {
                    row.delivery_state = "delivered".into();
                    row.last_error.clear();
                }
                Attempt::Refused(reason) => {
                    row.delivery_state = "failed".into();
                    row.last_error = reason;
                }
                Attempt::Retry(reason) if row.attempts >= self.config.max_attempts => {
                    row.delivery_state = "failed".into();
                    row.last_error = format!("gave up after {} attempts: {reason}", row.attempts);
                }
                Attempt::Retry(reason) => {
                    row.next_attempt_at = (now + self.backoff_secs(row.attempts)) as u32;
                    row.last_error = reason;
                }
            }
            info!(alert_id = %row.alert_id, webhook = %row.webhook, attempt = row.attempts, state = %row.delivery_state, error = %row.last_error, "alert delivery");
            row.updated_at = now as u32;
            row.version += 1;
            updates.push(row);
        }
        Ok(self.store.record(&updates).await?)
    }

    /// Exponential backoff with ±25 % jitter, in whole seconds (at least 1).
    fn backoff_secs(&self, attempts: u32) -> i64 {
        let base = self.config.retry_initial_ms.saturating_mul(1u64 << attempts.min(20).saturating_sub(1));
        let capped = base.min(self.config.retry_max_ms) as f64 * (0.75 + rand::random::<f64>() * 0.5);
        ((capped / 1000.0).ceil() as i64).max(1)
    }
}

/// Budget statuses by id, for the API.
pub fn by_id(statuses: Vec<BudgetStatus>) -> BTreeMap<String, BudgetStatus> {
    statuses.into_iter().map(|s| (s.budget.id.clone(), s)).collect()
}
