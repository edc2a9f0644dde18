//! Where each budget stands now: spend in its current period, state and `as_of`. The
//! evaluator fires alerts from it and the budget API and dashboard show it, so all three see
//! the same numbers.
//!
//! Spend is read from ClickHouse, where every worker's flushes merge: the global truth,
//! whichever worker reads it. It is complete up to `as_of`, the event time every partition of
//! the usage topic has been flushed to.
//!
//! Every worker also keeps the latest statuses in memory ([`BudgetStatuses::latest`]),
//! refreshed each evaluation interval, so the guardrail check answers without a query.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use costline_clickhouse::alert_store::AlertStore;
use costline_core::budget::{Budget, BudgetState};
use costline_core::PicoUsd;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Where a budget stands now.
#[derive(Debug, Clone)]
pub struct BudgetStatus {
    pub budget: Budget,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub spend: PicoUsd,
    pub state: BudgetState,
    /// Event time (epoch seconds) up to which `spend` is complete.
    pub as_of: u32,
}

impl BudgetStatus {
    /// `as_of` in RFC 3339.
    pub fn as_of_rfc3339(&self) -> Option<String> {
        Utc.timestamp_opt(i64::from(self.as_of), 0).single().map(|t| t.to_rfc3339())
    }
}

/// Every budget's status as read at one moment.
#[derive(Debug)]
pub struct Snapshot {
    pub statuses: Vec<BudgetStatus>,
    pub read_at: DateTime<Utc>,
}

/// The configured budgets and where their spend is read.
pub struct BudgetStatuses {
    store: AlertStore,
    topic: String,
    budgets: Vec<Budget>,
    latest: watch::Sender<Option<Arc<Snapshot>>>,
}

impl BudgetStatuses {
    /// `topic`: the usage topic, whose flushes say how complete the spend is.
    pub fn new(store: AlertStore, topic: String, budgets: Vec<Budget>) -> BudgetStatuses {
        BudgetStatuses { store, topic, budgets, latest: watch::Sender::new(None) }
    }

    /// Every budget's status now, read from ClickHouse; kept as the latest snapshot.
    pub async fn all(&self) -> anyhow::Result<Vec<BudgetStatus>> {
        let read_at = Utc::now();
        let statuses = self.read(&self.budgets).await?;
        self.latest.send_replace(Some(Arc::new(Snapshot { statuses: statuses.clone(), read_at })));
        Ok(statuses)
    }

    /// The statuses last read by [`all`](Self::all); `None` before the first read succeeds.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.latest.borrow().clone()
    }

    /// Reads every budget's status each `interval` until `shutdown`, on every worker (the
    /// evaluator reads them only where it leads). A failed read keeps the previous snapshot.
    pub async fn refresh(&self, interval: Duration, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            // Where this worker leads, the evaluator has just read them.
            let half = chrono::TimeDelta::from_std(interval / 2).unwrap_or(chrono::TimeDelta::MAX);
            let fresh = self.latest().is_some_and(|s| Utc::now() - s.read_at < half);
            if fresh {
                continue;
            }
            let read = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                read = self.all() => read,
            };
            if let Err(e) = read {
                warn!(
                    error = format!("{e:#}"),
                    "reading budget statuses failed; the guardrail check keeps the previous ones"
                );
            }
        }
    }

    /// Budget `id`'s status now; `None` if no budget has that id.
    pub async fn one(&self, id: &str) -> anyhow::Result<Option<BudgetStatus>> {
        let Some(budget) = self.budgets.iter().find(|b| b.id == id) else { return Ok(None) };
        Ok(self.read(std::slice::from_ref(budget)).await?.pop())
    }

    async fn read(&self, budgets: &[Budget]) -> anyhow::Result<Vec<BudgetStatus>> {
        if budgets.is_empty() {
            return Ok(Vec::new());
        }
        let as_of = self.store.as_of(&self.topic).await?;
        let now = Utc::now();
        let periods: Vec<_> = budgets.iter().map(|b| b.period.bounds(now, b.zone)).collect();
        let asked: Vec<_> = budgets
            .iter()
            .zip(&periods)
            .map(|(budget, (start, end))| (&budget.scope, start.timestamp(), end.timestamp()))
            .collect();
        let spends = self.store.spends(&asked).await?;
        Ok(budgets
            .iter()
            .zip(periods)
            .zip(spends)
            .map(|((budget, (period_start, period_end)), spend)| BudgetStatus {
                budget: budget.clone(),
                period_start,
                period_end,
                spend,
                state: budget.state(spend),
                as_of,
            })
            .collect())
    }
}
