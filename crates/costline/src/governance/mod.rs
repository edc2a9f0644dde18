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
//! threshold fires once per period whatever the restarts, replays or hand-overs. Rule scopes
//! are mostly values the senders choose (model names, endpoint tags), so each rule has at most
//! `alerts.max_alerts_per_rule` alerts of its own per cooldown and counts the rest in one
//! (`rules::cap`): a burst of new names can neither page once per name nor grow a query.
//!
//! `alerts` is also the outbox: a delivery is recorded `pending` before the first attempt,
//! every attempt writes a new version of the row as soon as it ends, and whichever worker
//! evaluates resumes what is pending. Deliveries run apart from evaluation, one loop per
//! webhook, so that a receiver that hangs until the timeout delays neither the evaluations
//! (budget alerts keep firing on time) nor the other webhooks.

pub mod api;
pub mod webhook;

use std::collections::BTreeMap;
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
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{AlertsConfig, Config};
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
    webhooks: BTreeMap<String, Arc<Webhook>>,
    config: AlertsConfig,
    /// Set while this worker owns partition 0.
    pub evaluator: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    /// Bumped when an evaluation recorded new deliveries: wakes the delivery loops at once
    /// rather than at their next tick.
    recorded: watch::Sender<u64>,
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
        let mut webhooks = BTreeMap::new();
        for hook in &config.webhooks {
            let secret = hook.secret.clone().with_context(|| {
                format!("webhook {}: its secret (environment variable {}) was not loaded", hook.id, hook.secret_env)
            })?;
            let webhook = Webhook::new(&hook.url, secret, Duration::from_millis(hook.timeout_ms))
                .with_context(|| format!("webhook {}", hook.id))?;
            webhooks.insert(hook.id.clone(), Arc::new(webhook));
        }
        Ok(Governance {
            store: GovernanceStore::new(target),
            topic: config.kafka.topic.clone(),
            budgets,
            webhooks,
            config: config.alerts.clone(),
            evaluator: Arc::new(AtomicBool::new(false)),
            metrics,
            recorded: watch::Sender::new(0),
        })
    }

    /// Evaluates and delivers while this worker is the evaluator, until `shutdown`: one task
    /// evaluates, one per webhook delivers. Returns once all of them have stopped; deliveries in
    /// flight are dropped and stay pending in the outbox.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tasks = JoinSet::new();
        tasks.spawn(self.clone().evaluate_loop(shutdown.clone()));
        for (id, hook) in &self.webhooks {
            tasks.spawn(self.clone().deliver_loop(id.clone(), hook.clone(), shutdown.clone()));
        }
        while let Some(ended) = tasks.join_next().await {
            if let Err(e) = ended {
                warn!(error = %e, "an alert task ended abnormally");
            }
        }
    }

    /// Every `alerts.evaluate_interval_ms`: budgets, then rules, then deliveries to webhooks
    /// no longer configured. A failing part does not hold up the others.
    async fn evaluate_loop(self: Arc<Self>, shutdown: CancellationToken) {
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
            let pass = async {
                let budgets = self.evaluate_budgets().await.context("budgets");
                let rules = self.evaluate_rules().await.context("rules");
                let orphans = self.fail_orphans().await.context("deliveries to removed webhooks");
                [budgets, rules, orphans]
            };
            let results = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                results = pass => results,
            };
            let mut ok = true;
            for e in results.into_iter().filter_map(Result::err) {
                ok = false;
                warn!(error = format!("{e:#}"), "alert evaluation failed; will retry");
            }
            self.metrics.alert_evaluations.with_label_values(&[if ok { "ok" } else { "failed" }]).inc();
        }
    }

    /// Delivers what is due to one webhook, at its tick or as soon as an evaluation recorded
    /// something new, until nothing is due.
    async fn deliver_loop(self: Arc<Self>, id: String, hook: Arc<Webhook>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(Duration::from_millis(self.config.evaluate_interval_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recorded = self.recorded.subscribe();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
                Ok(()) = recorded.changed() => {}
            }
            if !self.evaluator.load(Ordering::Relaxed) {
                continue;
            }
            loop {
                let batch = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    batch = self.deliver_batch(&id, &hook) => batch,
                };
                match batch {
                    // A full batch: more may be due.
                    Ok(taken) if taken == self.config.delivery_batch => continue,
                    Ok(_) => break,
                    Err(e) => {
                        warn!(webhook = %id, url = %hook.origin(), error = format!("{e:#}"), "alert delivery pass failed; will retry");
                        break;
                    }
                }
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

    async fn evaluate_budgets(&self) -> anyhow::Result<()> {
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
        self.fire(alerts).await
    }

    async fn evaluate_rules(&self) -> anyhow::Result<()> {
        let mut alerts = Vec::new();
        for finding in self.rule_findings().await? {
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

    /// Every rule's findings, each rule's capped to `alerts.max_alerts_per_rule` per cooldown.
    async fn rule_findings(&self) -> anyhow::Result<Vec<Finding>> {
        let now = now_secs();
        let c = &self.config;
        let mut findings = Vec::new();
        if c.retry_storm.enabled {
            let since = now - i64::from(c.retry_storm.window_secs);
            let window = self.store.retries_by_endpoint(since).await?;
            let rule =
                RetryStorm { max_ratio: c.retry_storm.max_retry_ratio, min_requests: c.retry_storm.min_requests };
            findings.extend(self.capped(rule.evaluate(&window, u64::from(c.retry_storm.window_secs)), now).await?);
        }
        if c.cost_spike.enabled {
            let last_hour = now / 3600 * 3600 - 3600;
            let hours = self.store.hourly_costs(last_hour, i64::from(c.cost_spike.trailing_hours)).await?;
            let rule = CostSpike {
                factor: c.cost_spike.factor,
                min_cost_usd: c.cost_spike.min_cost_usd,
                min_history_hours: c.cost_spike.min_history_hours,
            };
            findings.extend(self.capped(rule.evaluate(&hours), now).await?);
        }
        if c.config_drift.enabled {
            let recent_start = now / 3600 * 3600 - 3600;
            let known_start = recent_start - i64::from(c.config_drift.lookback_hours) * 3600;
            let known = self.store.model_uses(known_start, recent_start).await?;
            let recent = self.store.model_uses(recent_start, now + 3600).await?;
            let rule = ConfigDrift { min_history_hours: c.config_drift.min_history_hours };
            findings.extend(self.capped(rule.evaluate(recent.keys(), &known), now).await?);
        }
        if c.unpriced_model.enabled {
            let since = now - i64::from(c.unpriced_model.window_secs);
            let unpriced = rules::unpriced_models(&self.store.unpriced_models(since).await?);
            findings.extend(self.capped(unpriced, now).await?);
        }
        Ok(findings)
    }

    /// One rule's findings less the scopes cooling down, capped ([`rules::cap`]).
    async fn capped(&self, findings: Vec<Finding>, now: i64) -> anyhow::Result<Vec<Finding>> {
        let Some(rule) = findings.first().map(|f| f.rule) else { return Ok(findings) };
        // Cooling down: fired less than `cooldown_secs` ago.
        let since = now - i64::from(self.config.cooldown_secs) + 1;
        let cooling = self.store.fired_scopes(rule, since).await.with_context(|| format!("rule {rule}"))?;
        Ok(rules::cap(findings, &cooling, self.config.max_alerts_per_rule))
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
        self.store.record(&rows).await.context("recording fired alerts")?;
        if rows.iter().any(|row| row.delivery_state == "pending") {
            self.recorded.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(())
    }

    /// Attempts up to `alerts.delivery_batch` due deliveries to webhook `id`, at most
    /// `alerts.delivery_concurrency` at a time, each outcome recorded as soon as it is known.
    /// Returns how many it took.
    async fn deliver_batch(&self, id: &str, hook: &Webhook) -> anyhow::Result<usize> {
        let due = self
            .store
            .due(id, now_secs() as u32, self.config.delivery_batch)
            .await
            .context("reading due deliveries")?;
        let taken = due.len();
        let outcomes: Vec<anyhow::Result<()>> = futures_util::stream::iter(due)
            .map(|row| self.attempt(hook, row))
            .buffer_unordered(self.config.delivery_concurrency)
            .collect()
            .await;
        outcomes.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        Ok(taken)
    }

    /// One attempt of one delivery, and its new version in the outbox.
    async fn attempt(&self, hook: &Webhook, mut row: AlertRow) -> anyhow::Result<()> {
        row.attempts += 1;
        let attempt = hook.deliver(&row.alert_id, &row.body, now_secs()).await;
        let now = now_secs();
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
        info!(alert_id = %row.alert_id, webhook = %row.webhook, url = %hook.origin(), attempt = row.attempts, state = %row.delivery_state, error = %row.last_error, "alert delivery");
        row.updated_at = now as u32;
        row.version += 1;
        self.store
            .record(std::slice::from_ref(&row))
            .await
            .with_context(|| format!("recording the delivery of {} to {}", row.alert_id, row.webhook))
    }

    /// Marks pending deliveries to webhooks no longer configured as failed (a batch a pass).
    async fn fail_orphans(&self) -> anyhow::Result<()> {
        let configured: Vec<String> = self.webhooks.keys().cloned().collect();
        let mut orphans = self.store.orphaned(&configured, self.config.delivery_batch).await?;
        let now = now_secs() as u32;
        for row in &mut orphans {
            row.delivery_state = "failed".into();
            row.last_error = format!("webhook {:?} is no longer configured", row.webhook);
            row.updated_at = now;
            row.version += 1;
        }
        Ok(self.store.record(&orphans).await?)
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
