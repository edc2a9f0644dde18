//! The evaluation loop: every `alerts.evaluate_interval_ms` while this worker leads, budgets,
//! then rules, then resolves of budget alerts whose period ended, then deliveries to removed
//! webhooks. The parts fail apart: a failing rule never
//! stops a budget alert.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use costline_clickhouse::alert_store::AlertStore;
use prometheus::IntCounterVec;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::budget_alerts::budget_alerts;
use crate::leadership::LeaderTicks;
use crate::outbox::Outbox;
use crate::rule_alerts::RuleChecks;
use crate::status::BudgetStatuses;
use crate::webhook::Webhook;

pub struct Evaluator {
    pub statuses: Arc<BudgetStatuses>,
    pub rules: RuleChecks,
    pub outbox: Arc<Outbox<AlertStore, Webhook>>,
    pub interval: Duration,
    /// `costline_alert_evaluations_total` by result.
    pub evaluations: IntCounterVec,
}

impl Evaluator {
    /// Evaluates while this worker leads, until `shutdown`.
    pub async fn run(self, leadership: watch::Receiver<bool>, shutdown: CancellationToken) {
        let mut ticks = LeaderTicks::new(self.interval, leadership, shutdown);
        while ticks.next(std::future::pending()).await {
            let Some(results) = ticks.unless_shut_down(self.pass()).await else { return };
            let mut ok = true;
            for e in results.into_iter().filter_map(Result::err) {
                ok = false;
                warn!(error = format!("{e:#}"), "alert evaluation failed; will retry");
            }
            self.evaluations.with_label_values(&[if ok { "ok" } else { "failed" }]).inc();
        }
    }

    async fn pass(&self) -> [anyhow::Result<()>; 4] {
        let budgets = async {
            let now = Utc::now();
            let statuses = self.statuses.all().await?;
            let alerts = statuses.iter().flat_map(|status| budget_alerts(status, now)).collect();
            self.outbox.record_fired(alerts).await
        };
        let rules = async { self.outbox.record_fired(self.rules.alerts(Utc::now().timestamp()).await?).await };
        [
            budgets.await.context("budgets"),
            rules.await.context("rules"),
            self.outbox.record_resolves(Utc::now()).await.context("resolves"),
            self.outbox.fail_orphans().await.context("deliveries to removed webhooks"),
        ]
    }
}
