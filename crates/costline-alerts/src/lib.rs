//! costline's alerts: budgets and alert rules evaluated against the spend in ClickHouse, and
//! their alerts delivered to webhooks through a durable outbox (the `alerts` table).
//!
//! Spend is the global truth: it is read from ClickHouse, where every worker's flushes merge,
//! so it does not matter which worker evaluates; exactly one does at a time ([`leadership`]).
//! Each alert has a stable id, looked up before it is recorded, so a threshold fires once per
//! period whatever the restarts, replays or hand-overs.
//!
//! Layout, one job per module:
//! - [`status`]: where each budget stands (spend, state, `as_of`), for the evaluator, the budget
//!   API and the dashboard;
//! - [`guardrail`]: which budgets cover a call and whether it may be made, from the statuses
//!   every worker keeps in memory;
//! - [`budget_alerts`]: the alerts a budget's status calls for;
//! - [`rule_alerts`]: the alerts the rules find, cooled down and capped;
//! - [`outbox`]: recording fired alerts once, the delivery state machine and the per-webhook
//!   delivery loops, generic over its store and its sender;
//! - [`resolves`]: the end of a budget alert's period, resolved at PagerDuty;
//! - [`webhook`]: the sender: HTTP POSTs in the webhook's format ([`formats`]: costline's own,
//!   signed; Slack; PagerDuty), the URL's secrets kept out of errors;
//! - [`leadership`] and `evaluator`: who evaluates, and the evaluation loop.
//!
//! The ClickHouse side (spend, rule aggregates, the `alerts` rows) is
//! `costline_clickhouse::alert_store`; the HTTP routes are the binary's.

pub mod budget_alerts;
mod evaluator;
pub mod formats;
pub mod guardrail;
pub mod leadership;
pub mod outbox;
pub mod resolves;
pub mod rule_alerts;
pub mod status;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use costline_clickhouse::alert_store::AlertStore;
use prometheus::IntCounterVec;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use evaluator::Evaluator;
use outbox::{Outbox, OutboxSettings};
use rule_alerts::{RuleChecks, RuleSettings};
use status::BudgetStatuses;
use webhook::Webhook;

/// The counters the alerts update (registered by the binary with the other metrics).
#[derive(Clone)]
pub struct AlertMetrics {
    /// Alerts fired, by kind.
    pub fired: IntCounterVec,
    /// Delivery attempts, by result.
    pub deliveries: IntCounterVec,
    /// Evaluation passes, by result.
    pub evaluations: IntCounterVec,
}

/// How the alerts run (`[alerts]`).
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub evaluate_interval: Duration,
    pub rules: RuleSettings,
    pub outbox: OutboxSettings,
}

/// The evaluator and the delivery loops of one worker.
pub struct Alerts {
    evaluator: Evaluator,
    outbox: Arc<Outbox<AlertStore, Webhook>>,
    statuses: Arc<BudgetStatuses>,
}

impl Alerts {
    /// `statuses` is shared with the budget API; `webhooks` by id.
    pub fn new(
        store: AlertStore,
        statuses: Arc<BudgetStatuses>,
        webhooks: BTreeMap<String, Webhook>,
        settings: AlertSettings,
        metrics: AlertMetrics,
    ) -> Alerts {
        let outbox = Arc::new(Outbox::new(store.clone(), webhooks, settings.outbox, &metrics));
        let evaluator = Evaluator {
            statuses: statuses.clone(),
            rules: RuleChecks::new(store, settings.rules),
            outbox: outbox.clone(),
            interval: settings.evaluate_interval,
            evaluations: metrics.evaluations,
        };
        Alerts { evaluator, outbox, statuses }
    }

    /// Evaluates and delivers while `leadership` says this worker leads, until `shutdown`: one
    /// task evaluates, one per webhook delivers; one more, on every worker, keeps the budget
    /// statuses in memory fresh for the guardrail check. Returns once all of them have
    /// stopped; deliveries in flight are dropped and stay pending in the outbox.
    pub async fn run(self, leadership: watch::Receiver<bool>, shutdown: CancellationToken) {
        let mut tasks = JoinSet::new();
        let (statuses, interval, stop) = (self.statuses.clone(), self.evaluator.interval, shutdown.clone());
        tasks.spawn(async move { statuses.refresh(interval, stop).await });
        for id in self.outbox.webhook_ids() {
            tasks.spawn(self.outbox.clone().run_deliveries(id.clone(), leadership.clone(), shutdown.clone()));
        }
        tasks.spawn(self.evaluator.run(leadership, shutdown));
        while let Some(ended) = tasks.join_next().await {
            if let Err(e) = ended {
                warn!(error = %e, "an alert task ended abnormally");
            }
        }
    }
}
