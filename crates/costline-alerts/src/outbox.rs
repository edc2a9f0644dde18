//! The `alerts` table as a durable outbox, and the state machine of a delivery.
//!
//! A fired alert is recorded once (its id is looked up first), as one row per webhook:
//! `pending` before the first attempt, or `no_webhook` when it goes nowhere. Each attempt
//! writes a new version of the row as soon as it ends:
//!
//! ```text
//! pending ──2xx──────────────────────▶ delivered
//!    │ ──3xx, 4xx but 429─────────────▶ failed
//!    │ ──timeout, 429, 5xx, the last──▶ failed   (gave up after `max_attempts`)
//!    │ ──timeout, 429, 5xx────────────▶ pending  (next attempt after a backoff with jitter)
//!    └ ──its webhook was removed──────▶ failed
//! ```
//!
//! Nothing but the table holds a delivery's state, so whichever worker leads after a restart
//! resumes what is pending. Deliveries run apart from evaluation, one loop per webhook, so a
//! receiver that hangs until its timeout holds up neither the evaluations nor other webhooks.
//! The outbox is generic over its store ([`OutboxStore`]) and its sender ([`AlertSender`]):
//! the state machine is unit-tested against fakes, the end-to-end tests run it on ClickHouse
//! and HTTP.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use costline_clickhouse::alert_store::{AlertRow, AlertStore, DeliveryState};
use costline_core::backoff::{jitter, Backoff};
use costline_core::budget::AlertId;
use costline_core::PicoUsd;
use futures_util::StreamExt;
use prometheus::IntCounterVec;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::leadership::LeaderTicks;
use crate::{resolves, AlertMetrics};

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Timeouts, connection errors, 429 and 5xx: try again later.
    Retry(String),
    /// Any other status, redirects included: the receiver refuses this alert; do not try again.
    Refused(String),
}

/// Where the outbox keeps its rows (ClickHouse's `alerts` in production).
pub trait OutboxStore: Send + Sync + 'static {
    /// Which of `alert_ids` were recorded before.
    fn fired(&self, alert_ids: &[String]) -> impl Future<Output = anyhow::Result<BTreeSet<String>>> + Send;
    /// Writes new versions of rows (the highest version of an alert and webhook wins).
    fn record(&self, rows: &[AlertRow]) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Up to `limit` pending deliveries to `webhook` due at `now_secs`, the longest due first.
    fn due(
        &self,
        webhook: &str,
        now_secs: u32,
        limit: usize,
    ) -> impl Future<Output = anyhow::Result<Vec<AlertRow>>> + Send;
    /// Up to `limit` pending deliveries to webhooks not in `configured`.
    fn orphaned(
        &self,
        configured: &[String],
        limit: usize,
    ) -> impl Future<Output = anyhow::Result<Vec<AlertRow>>> + Send;
    /// Up to `limit` budget alerts sent to `webhooks` that no resolve names yet, the oldest
    /// periods first.
    fn unresolved(
        &self,
        webhooks: &[String],
        limit: usize,
    ) -> impl Future<Output = anyhow::Result<Vec<AlertRow>>> + Send;
}

impl OutboxStore for AlertStore {
    async fn fired(&self, alert_ids: &[String]) -> anyhow::Result<BTreeSet<String>> {
        Ok(AlertStore::fired(self, alert_ids).await?)
    }

    async fn record(&self, rows: &[AlertRow]) -> anyhow::Result<()> {
        Ok(AlertStore::record(self, rows).await?)
    }

    async fn due(&self, webhook: &str, now_secs: u32, limit: usize) -> anyhow::Result<Vec<AlertRow>> {
        Ok(AlertStore::due(self, webhook, now_secs, limit).await?)
    }

    async fn orphaned(&self, configured: &[String], limit: usize) -> anyhow::Result<Vec<AlertRow>> {
        Ok(AlertStore::orphaned(self, configured, limit).await?)
    }

    async fn unresolved(&self, webhooks: &[String], limit: usize) -> anyhow::Result<Vec<AlertRow>> {
        Ok(AlertStore::unresolved(self, webhooks, limit).await?)
    }
}

/// Makes one delivery attempt to one receiver (a signed HTTP POST in production).
pub trait AlertSender: Send + Sync + 'static {
    /// What logs may show of the receiver (no secrets).
    fn origin(&self) -> &str;
    /// Whether the receiver takes resolves of budget alerts whose period ended (PagerDuty).
    fn takes_resolves(&self) -> bool;
    fn send(&self, alert_id: &str, body: &str, now_secs: i64) -> impl Future<Output = Attempt> + Send;
}

/// What an alert is about: the `alerts.kind` column and the body's `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    Budget,
    Rule,
    /// The end of a budget alert's period ([`crate::resolves`]).
    Resolve,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Budget => "budget",
            AlertKind::Rule => "rule",
            AlertKind::Resolve => "resolve",
        }
    }
}

/// An alert an evaluation found, before the outbox knows whether it fired already.
#[derive(Debug, Clone)]
pub struct FiredAlert {
    pub id: AlertId,
    pub kind: AlertKind,
    /// The budget id or the rule name.
    pub source: String,
    /// `key=value` pairs (a budget's scope or a rule's finding).
    pub scope: String,
    pub period_start: i64,
    pub threshold_percent: u32,
    pub spend: PicoUsd,
    pub limit: PicoUsd,
    pub value: f64,
    pub summary: String,
    /// The webhook body, fixed now: every attempt sends the same bytes.
    pub body: serde_json::Value,
    pub webhooks: Vec<String>,
}

impl FiredAlert {
    /// Its first rows: one pending delivery per webhook, or one `no_webhook` row.
    fn rows(&self, now_secs: u32) -> Vec<AlertRow> {
        let hooks = if self.webhooks.is_empty() { vec![String::new()] } else { self.webhooks.clone() };
        hooks
            .into_iter()
            .map(|webhook| AlertRow {
                alert_id: self.id.0.clone(),
                delivery_state: if webhook.is_empty() { DeliveryState::NoWebhook } else { DeliveryState::Pending },
                webhook,
                kind: self.kind.as_str().into(),
                source: self.source.clone(),
                scope: self.scope.clone(),
                period_start: u32::try_from(self.period_start).unwrap_or(0),
                threshold_percent: self.threshold_percent,
                spend_usd: self.spend.0,
                limit_usd: self.limit.0,
                value: self.value,
                fired_at: now_secs,
                summary: self.summary.clone(),
                body: self.body.to_string(),
                attempts: 0,
                next_attempt_at: now_secs,
                last_error: String::new(),
                updated_at: now_secs,
                version: 1,
            })
            .collect()
    }
}

/// How deliveries are paced and retried (`[alerts]`).
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// First retry delay; it doubles per attempt up to `retry_max`, ±25 % jitter, at least 1 s.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Attempts after which a delivery that keeps failing for now is `failed`.
    pub max_attempts: u32,
    /// Due deliveries a webhook's loop takes at a time.
    pub batch: usize,
    /// Attempts a webhook's loop has in flight at once.
    pub concurrency: usize,
    /// How often a webhook's loop looks for due deliveries (besides being woken by new ones).
    pub poll_interval: Duration,
}

/// The result label of `costline_alert_deliveries_total` for an attempt.
fn result_label(attempt: &Attempt, gave_up: bool) -> &'static str {
    match attempt {
        Attempt::Delivered => "delivered",
        Attempt::Refused(_) => "refused",
        Attempt::Retry(_) if gave_up => "gave_up",
        Attempt::Retry(_) => "retry",
    }
}

/// The next version of `row` after one more attempt ended as `attempt` at `now_secs`.
/// `unit_random` (uniform in `[0, 1)`) spreads the retry delay.
pub fn after_attempt(
    mut row: AlertRow,
    attempt: Attempt,
    now_secs: u32,
    settings: &OutboxSettings,
    unit_random: f64,
) -> AlertRow {
    row.attempts += 1;
    match attempt {
        Attempt::Delivered => {
            row.delivery_state = DeliveryState::Delivered;
            row.last_error.clear();
        }
        Attempt::Refused(reason) => {
            row.delivery_state = DeliveryState::Failed;
            row.last_error = reason;
        }
        Attempt::Retry(reason) if row.attempts >= settings.max_attempts => {
            row.delivery_state = DeliveryState::Failed;
            row.last_error = format!("gave up after {} attempts: {reason}", row.attempts);
        }
        Attempt::Retry(reason) => {
            let base = Backoff::new(settings.retry_initial, settings.retry_max).base_delay(row.attempts);
            let delay_secs = jitter(base, unit_random).as_secs_f64().ceil().max(1.0) as u32;
            row.next_attempt_at = now_secs.saturating_add(delay_secs);
            row.last_error = reason;
        }
    }
    row.updated_at = now_secs;
    row.version += 1;
    row
}

/// Most budget alerts one evaluation looks at for resolves: the alerts of the current periods
/// (not due yet) come back every time, so this must exceed their number (budgets × thresholds
/// × PagerDuty webhooks); the oldest periods come first.
const RESOLVE_SCAN: usize = 1_000;

fn now_secs() -> u32 {
    u32::try_from(chrono::Utc::now().timestamp()).unwrap_or(u32::MAX)
}

/// The outbox: records fired alerts and delivers them.
pub struct Outbox<S, H> {
    store: S,
    webhooks: BTreeMap<String, Arc<H>>,
    settings: OutboxSettings,
    /// `costline_alerts_fired_total` by kind and `costline_alert_deliveries_total` by result.
    fired: IntCounterVec,
    deliveries: IntCounterVec,
    /// Bumped when new pending deliveries were recorded: wakes the delivery loops at once rather
    /// than at their next poll.
    recorded: watch::Sender<u64>,
}

impl<S: OutboxStore, H: AlertSender> Outbox<S, H> {
    pub fn new(
        store: S,
        webhooks: BTreeMap<String, H>,
        settings: OutboxSettings,
        metrics: &AlertMetrics,
    ) -> Outbox<S, H> {
        let webhooks = webhooks.into_iter().map(|(id, hook)| (id, Arc::new(hook))).collect();
        let (fired, deliveries) = (metrics.fired.clone(), metrics.deliveries.clone());
        Outbox { store, webhooks, settings, fired, deliveries, recorded: watch::Sender::new(0) }
    }

    /// The configured webhook ids.
    pub fn webhook_ids(&self) -> impl Iterator<Item = &String> {
        self.webhooks.keys()
    }

    /// Records the alerts not recorded before, each as its first rows.
    pub async fn record_fired(&self, alerts: Vec<FiredAlert>) -> anyhow::Result<()> {
        if alerts.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = alerts.iter().map(|a| a.id.0.clone()).collect();
        let fired = self.store.fired(&ids).await.context("looking up fired alert ids")?;
        let now = now_secs();
        let mut rows = Vec::new();
        for alert in alerts.iter().filter(|a| !fired.contains(&a.id.0)) {
            info!(alert_id = %alert.id.0, kind = alert.kind.as_str(), source = %alert.source, "{}", alert.summary);
            self.fired.with_label_values(&[alert.kind.as_str()]).inc();
            rows.extend(alert.rows(now));
        }
        self.store.record(&rows).await.context("recording fired alerts")?;
        if rows.iter().any(|row| row.delivery_state == DeliveryState::Pending) {
            self.recorded.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(())
    }

    /// Records the resolves due at `now` ([`crate::resolves`]) of up to `RESOLVE_SCAN` budget
    /// alerts sent to webhooks that take resolves.
    pub async fn record_resolves(&self, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<()> {
        let hooks: Vec<String> =
            self.webhooks.iter().filter(|(_, hook)| hook.takes_resolves()).map(|(id, _)| id.clone()).collect();
        if hooks.is_empty() {
            return Ok(());
        }
        let open = self.store.unresolved(&hooks, RESOLVE_SCAN).await.context("reading unresolved budget alerts")?;
        self.record_fired(open.iter().filter_map(|row| resolves::resolve(row, now)).collect()).await
    }

    /// Marks a batch of pending deliveries to webhooks no longer configured as failed.
    pub async fn fail_orphans(&self) -> anyhow::Result<()> {
        let configured: Vec<String> = self.webhooks.keys().cloned().collect();
        let mut orphans = self.store.orphaned(&configured, self.settings.batch).await?;
        let now = now_secs();
        for row in &mut orphans {
            row.delivery_state = DeliveryState::Failed;
            row.last_error = format!("webhook {:?} is no longer configured", row.webhook);
            row.updated_at = now;
            row.version += 1;
        }
        self.store.record(&orphans).await
    }

    /// Attempts up to `batch` due deliveries to webhook `id`, at most `concurrency` at a time,
    /// each outcome recorded as soon as it is known. Returns how many it took.
    pub async fn deliver_due(&self, id: &str) -> anyhow::Result<usize> {
        let hook = self.webhooks.get(id).with_context(|| format!("webhook {id:?} is not configured"))?;
        let due = self.store.due(id, now_secs(), self.settings.batch).await.context("reading due deliveries")?;
        let taken = due.len();
        let outcomes: Vec<anyhow::Result<()>> = futures_util::stream::iter(due)
            .map(|row| self.attempt(hook, row))
            .buffer_unordered(self.settings.concurrency)
            .collect()
            .await;
        outcomes.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        Ok(taken)
    }

    /// One attempt of one delivery, and its new version in the outbox.
    async fn attempt(&self, hook: &H, row: AlertRow) -> anyhow::Result<()> {
        let attempt = hook.send(&row.alert_id, &row.body, i64::from(now_secs())).await;
        let gave_up = row.attempts + 1 >= self.settings.max_attempts;
        self.deliveries.with_label_values(&[result_label(&attempt, gave_up)]).inc();
        let row = after_attempt(row, attempt, now_secs(), &self.settings, rand::random());
        info!(alert_id = %row.alert_id, webhook = %row.webhook, url = %hook.origin(), attempt = row.attempts,
              state = %row.delivery_state, error = %row.last_error, "alert delivery");
        self.store
            .record(std::slice::from_ref(&row))
            .await
            .with_context(|| format!("recording the delivery of {} to {}", row.alert_id, row.webhook))
    }

    /// Delivers what is due to webhook `id` while this worker leads, at each poll or as soon
    /// as new deliveries were recorded, until nothing is due; until `shutdown`. Attempts in
    /// flight at shutdown are dropped and stay pending.
    pub async fn run_deliveries(
        self: Arc<Self>,
        id: String,
        leadership: watch::Receiver<bool>,
        shutdown: CancellationToken,
    ) {
        let mut ticks = LeaderTicks::new(self.settings.poll_interval, leadership, shutdown);
        let mut recorded = self.recorded.subscribe();
        // `recorded` cannot close: its sender lives as long as the outbox.
        while ticks.next(async { recorded.changed().await.unwrap_or_default() }).await {
            loop {
                let Some(batch) = ticks.unless_shut_down(self.deliver_due(&id)).await else { return };
                match batch {
                    // A full batch: more may be due.
                    Ok(taken) if taken == self.settings.batch => continue,
                    Ok(_) => break,
                    Err(e) => {
                        warn!(webhook = %id, error = format!("{e:#}"), "alert delivery pass failed; will retry");
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
