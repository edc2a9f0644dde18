//! What happens when partitions move (`PartitionLifecycle`).
//!
//! On assignment the worker asks ClickHouse how far the partition was written (`flushes`) and
//! which attempts it counted within the dedup horizon (`usage_events`), rebuilds the dedup
//! memory from them and starts fetching right after the last written offset. Kafka's committed
//! offset is ignored when ClickHouse knows better: after a crash between the insert and the
//! commit, ClickHouse is ahead, and starting there is what keeps events from counting twice.
//!
//! This runs inside the rebalance callback, which librdkafka calls from the consumer's poll,
//! i.e. from the worker's own task: the counter is handed to the worker loop through
//! [`PartitionChanges`] and is in place before the partition's first record arrives.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use costline_clickhouse::{LedgerSink, Targets};
use costline_core::{DedupIndex, PartitionCounter};
use costline_kafka::PartitionLifecycle;

use super::flush::InFlight;
use super::ownership::Ownership;
use crate::config::PipelineConfig;
use crate::metrics::Metrics;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A flush that a previous owner got only part of the way into ClickHouse before it died:
/// the replay must end its first batch exactly at `next_offset` and write it only to the
/// tables not `holding` it.
#[derive(Debug, Clone, Copy)]
pub struct UnfinishedFlush {
    pub next_offset: u64,
    pub holding: Targets,
}

/// A partition gained or lost.
pub enum PartitionChange {
    Assigned { partition: i32, counter: Box<PartitionCounter>, unfinished: Option<UnfinishedFlush> },
    Revoked { partition: i32 },
}

/// Changes produced inside rebalances, drained by the worker loop after each poll.
pub struct PartitionChanges {
    sink: LedgerSink,
    horizon_secs: u32,
    grace_secs: u32,
    max_clock_skew_secs: u32,
    /// Set while partition 0 is ours: its owner evaluates budgets and rules.
    evaluator: Arc<AtomicBool>,
    /// A revoked partition is let go only once no flush of ours holds it.
    in_flight: Arc<InFlight>,
    /// Ended first when a partition is revoked, so that no flush of it is written any more.
    ownership: Arc<Ownership>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    pending: Mutex<Vec<PartitionChange>>,
    any: AtomicBool,
    group: Mutex<GroupWatch>,
}

/// Since when the consumer group has not been steady, and when that was last logged.
#[derive(Debug, Default)]
struct GroupWatch {
    unsettled_since: Option<Instant>,
    warned_at: Option<Instant>,
}

impl GroupWatch {
    /// Takes one report; returns how long the group has been unsettled, and whether to warn.
    fn observe(&mut self, steady: bool, now: Instant) -> (Duration, bool) {
        if steady {
            *self = GroupWatch::default();
            return (Duration::ZERO, false);
        }
        let unsettled = now.saturating_duration_since(*self.unsettled_since.get_or_insert(now));
        let warn = unsettled >= UNSETTLED_WARNING
            && self.warned_at.is_none_or(|at| now.saturating_duration_since(at) >= UNSETTLED_WARNING);
        if warn {
            self.warned_at = Some(now);
        }
        (unsettled, warn)
    }
}

/// A rebalance that lasts longer than this is logged (and again every this long): partitions
/// may be owned by nobody meanwhile.
const UNSETTLED_WARNING: Duration = Duration::from_secs(60);

impl PartitionChanges {
    pub fn new(
        sink: LedgerSink,
        pipeline: &PipelineConfig,
        evaluator: Arc<AtomicBool>,
        (in_flight, ownership): (Arc<InFlight>, Arc<Ownership>),
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        PartitionChanges {
            sink,
            horizon_secs: pipeline.dedup_horizon_secs,
            grace_secs: pipeline.dedup_grace_secs,
            max_clock_skew_secs: pipeline.max_clock_skew_secs,
            evaluator,
            in_flight,
            ownership,
            metrics,
            shutdown,
            pending: Mutex::new(Vec::new()),
            any: AtomicBool::new(false),
            group: Mutex::new(GroupWatch::default()),
        }
    }

    /// Takes every change since the last call (cheap when there is none).
    pub fn drain(&self) -> Vec<PartitionChange> {
        if !self.any.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        self.pending.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default()
    }

    fn push(&self, change: PartitionChange) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.push(change);
            self.any.store(true, Ordering::Release);
        }
    }

    /// Reads the partition's past from ClickHouse and builds its counter.
    async fn open(
        &self,
        topic: &str,
        partition: i32,
    ) -> anyhow::Result<(u64, PartitionCounter, Option<UnfinishedFlush>)> {
        let progress = self.sink.progress(topic).await.context("reading flush progress")?;
        let dedup = DedupIndex::new(self.horizon_secs, self.grace_secs);
        let start = progress.get(&(partition as u32)).map_or(0, |p| p.next_offset);
        let unfinished = match self.sink.unfinished_flush(topic, partition as u32, start).await? {
            Some(next_offset) => {
                let holding = self.sink.tables_holding(topic, partition as u32, next_offset).await?;
                warn!(
                    topic,
                    partition,
                    start,
                    next_offset,
                    holding = holding.bits(),
                    "a previous owner left a flush half-applied; the replay completes it"
                );
                Some(UnfinishedFlush { next_offset, holding })
            }
            None => None,
        };
        let Some(progress) = progress.get(&(partition as u32)) else {
            return Ok((0, PartitionCounter::new(dedup, 0), unfinished));
        };
        // Record times written before they were bounded (or by a worker whose clock ran ahead)
        // are bounded here too, so that one far-future record cannot empty the rebuild.
        let bound_ms = super::record_time_bound_ms(self.max_clock_skew_secs);
        let bound_secs = (bound_ms / 1000).clamp(0, i64::from(u32::MAX)) as u32;
        let from_secs = dedup.rebuild_from_secs(progress.newest_record_secs.min(bound_secs));
        let remembered = self
            .sink
            .remembered(topic, partition as u32, from_secs, progress.next_offset)
            .await
            .context("reading counted attempts for the dedup memory")?;
        let mut counter = PartitionCounter::new(dedup, progress.next_offset);
        counter.bound_record_times(bound_ms);
        for attempt in &remembered {
            counter.remember(&attempt.external_request_id, attempt.attempt, i64::from(attempt.record_secs) * 1000);
        }
        info!(
            topic,
            partition,
            next_offset = progress.next_offset,
            remembered = remembered.len(),
            "partition state rebuilt"
        );
        Ok((progress.next_offset, counter, unfinished))
    }
}

impl PartitionLifecycle for PartitionChanges {
    fn assigned(&self, topic: &str, partition: i32) -> Option<i64> {
        let handle = tokio::runtime::Handle::current();
        let mut backoff = Duration::from_millis(200);
        loop {
            match tokio::task::block_in_place(|| handle.block_on(self.open(topic, partition))) {
                Ok((next_offset, counter, unfinished)) => {
                    self.ownership.gain(partition);
                    self.push(PartitionChange::Assigned { partition, counter: Box::new(counter), unfinished });
                    if partition == 0 {
                        self.evaluator.store(true, Ordering::Relaxed);
                    }
                    return Some(next_offset as i64);
                }
                Err(e) if !self.shutdown.is_cancelled() => {
                    warn!(topic, partition, error = format!("{e:#}"), "cannot take the partition over yet; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                // Shutting down: the partition is left without a counter; its records are not counted here.
                Err(_) => return None,
            }
        }
    }

    fn revoked(&self, _topic: &str, partition: i32) {
        if partition == 0 {
            self.evaluator.store(false, Ordering::Relaxed);
        }
        self.ownership.lose(partition);
        tokio::task::block_in_place(|| self.in_flight.wait_for(partition, &self.shutdown));
        let _ = self.metrics.consumer_lag.remove_label_values(&[&partition.to_string()]);
        self.push(PartitionChange::Revoked { partition });
    }

    fn lag(&self, partition: i32, records: i64) {
        self.metrics.consumer_lag.with_label_values(&[&partition.to_string()]).set(records);
    }

    fn group(&self, steady: bool, rebalances: i64) {
        self.metrics.group_rebalances.set(rebalances);
        let Ok(mut watch) = self.group.lock() else { return };
        let (unsettled, warn) = watch.observe(steady, Instant::now());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_rebalance_is_reported_once_a_minute_until_the_group_is_steady() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut watch = GroupWatch::default();
        assert_eq!(watch.observe(false, at(0)), (Duration::ZERO, false));
        assert_eq!(watch.observe(false, at(55)), (Duration::from_secs(55), false));
        assert_eq!(watch.observe(false, at(60)), (Duration::from_secs(60), true));
        assert_eq!(watch.observe(false, at(65)), (Duration::from_secs(65), false));
        assert_eq!(watch.observe(false, at(120)), (Duration::from_secs(120), true));
        assert_eq!(watch.observe(true, at(125)), (Duration::ZERO, false));
        // A new rebalance starts its own clock.
        assert_eq!(watch.observe(false, at(130)), (Duration::ZERO, false));
        assert_eq!(watch.observe(false, at(185)), (Duration::from_secs(55), false));
    }
}
