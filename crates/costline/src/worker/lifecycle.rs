//! The Kafka consumer's partition lifecycle, wired to the progress component's rebalance
//! handling ([`Rebalance`]), the alerts' leadership and the group metrics.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use costline_clickhouse::LedgerSink;
use costline_kafka::{GroupWatch, PartitionLifecycle};
use costline_progress::Rebalance;
use tokio::sync::watch;
use tracing::warn;

use crate::metrics::Metrics;

pub struct WorkerLifecycle {
    pub rebalance: Rebalance<LedgerSink>,
    /// True while partition 0 is ours: its owner evaluates budgets and rules, so exactly one
    /// worker of the group leads the alerts.
    pub leadership: watch::Sender<bool>,
    pub metrics: Arc<Metrics>,
    pub group: Mutex<GroupWatch>,
}

impl PartitionLifecycle for WorkerLifecycle {
    fn assigned(&self, topic: &str, partition: i32) -> Option<i64> {
        let next_offset = self.rebalance.assigned(topic, partition)?;
        if partition == 0 {
            self.leadership.send_replace(true);
        }
        Some(next_offset as i64)
    }

    fn revoked(&self, _topic: &str, partition: i32) {
        if partition == 0 {
            self.leadership.send_replace(false);
        }
        self.rebalance.revoked(partition);
        let _ = self.metrics.consumer_lag.remove_label_values(&[&partition.to_string()]);
    }

    fn lag(&self, partition: i32, records: i64) {
        self.metrics.consumer_lag.with_label_values(&[&partition.to_string()]).set(records);
    }

    fn group(&self, steady: bool, rebalances: i64) {
        self.metrics.group_rebalances.set(rebalances);
        let (unsettled, warn) =
            self.group.lock().expect("the group watch's lock was poisoned by a panic").observe(steady, Instant::now());
        self.metrics.group_unsettled_seconds.set(unsettled.as_secs() as i64);
        if warn {
            warn!(
                seconds = unsettled.as_secs(),
                partitions = self.metrics.assigned_partitions.get(),
                "the consumer group has not settled: some partitions may have no owner; look for a member that \
                 is stuck or gone, or a broker that cannot complete the rebalance"
            );
        }
    }
}
