//! Taking a partition over: where it resumes and what it must remember, read from the ledger.
//!
//! On assignment the worker asks how far the partition was written (`flushes`) and which
//! attempts it counted within the dedup horizon (`usage_events`), rebuilds the dedup memory
//! from them and starts fetching right after the last written offset. Kafka's committed offset
//! is ignored: after a crash between the insert and the commit, the ledger is ahead, and
//! starting there is what keeps events from counting twice.
//!
//! A previous owner may have died with a flush half-applied (some tables hold it, `flushes`
//! does not). The take-over finds it ([`UnfinishedFlush`]); the replay then ends its first
//! batch exactly at that flush's end and writes it only to the tables that lack it, before it
//! counts one record more. The replay decides every record as the dead worker did, because
//! dedup decisions depend only on the records, not on timing.

use std::time::{SystemTime, UNIX_EPOCH};

use costline_clickhouse::{SinkError, Targets};
use costline_core::{DedupIndex, PartitionCounter};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::retry::{flush_backoff, wait_before_retry, ShutdownWhileRetrying};
use crate::store::LedgerStore;

/// A flush that a previous owner got only part of the way into the ledger before it died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnfinishedFlush {
    /// Where that flush ended: the replay's first batch must end exactly here.
    pub next_offset: u64,
    /// The tables that already hold it.
    pub holding: Targets,
}

/// Where a replay stands against the end of an unfinished flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Short of it: the batch is not ready.
    Short,
    /// Exactly at it: write the batch now, before counting one record more.
    AtEnd,
    /// Beyond it: the flush can no longer be completed exactly (a broken replay, logged).
    Passed,
}

impl UnfinishedFlush {
    /// Where a batch that ends at `next_offset` stands.
    pub fn replay_at(&self, next_offset: u64) -> Replay {
        match next_offset.cmp(&self.next_offset) {
            std::cmp::Ordering::Less => Replay::Short,
            std::cmp::Ordering::Equal => Replay::AtEnd,
            std::cmp::Ordering::Greater => Replay::Passed,
        }
    }

    /// The tables the completing row is for.
    pub fn missing(&self) -> Targets {
        Targets::ALL.without(self.holding)
    }
}

/// A partition taken over, ready to count.
pub struct PartitionStart {
    /// The first offset to fetch.
    pub next_offset: u64,
    pub counter: PartitionCounter,
    pub unfinished: Option<UnfinishedFlush>,
}

/// How a counter remembers, as configured (`pipeline.*`).
#[derive(Debug, Clone, Copy)]
pub struct DedupSettings {
    pub horizon_secs: u32,
    pub grace_secs: u32,
    pub max_clock_skew_secs: u32,
}

/// What failed while taking a partition over.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error("reading flush progress: {0}")]
    Progress(SinkError),
    #[error("looking for a half-applied flush: {0}")]
    Unfinished(SinkError),
    #[error("reading counted attempts for the dedup memory: {0}")]
    Remembered(SinkError),
}

/// Reads partitions' pasts from the ledger.
#[derive(Clone)]
pub struct Takeover<S> {
    store: S,
    dedup: DedupSettings,
}

impl<S: LedgerStore> Takeover<S> {
    pub fn new(store: S, dedup: DedupSettings) -> Self {
        Takeover { store, dedup }
    }

    /// Reads the partition's past and builds its counter.
    pub async fn open(&self, topic: &str, partition: i32) -> Result<PartitionStart, TakeoverError> {
        let ledger_partition = partition as u32;
        let progress = self.store.progress(topic).await.map_err(TakeoverError::Progress)?;
        let progress = progress.get(&ledger_partition).copied();
        let start = progress.map_or(0, |p| p.next_offset);
        let unfinished = match self.store.unfinished_flush(topic, ledger_partition, start).await {
            Ok(Some(next_offset)) => {
                let holding = self
                    .store
                    .tables_holding(topic, ledger_partition, next_offset)
                    .await
                    .map_err(TakeoverError::Unfinished)?;
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
            Ok(None) => None,
            Err(e) => return Err(TakeoverError::Unfinished(e)),
        };
        let dedup = DedupIndex::new(self.dedup.horizon_secs, self.dedup.grace_secs);
        let Some(progress) = progress else {
            return Ok(PartitionStart { next_offset: 0, counter: PartitionCounter::new(dedup, 0), unfinished });
        };
        // Record times written before they were bounded (or by a worker whose clock ran ahead)
        // are bounded here too, so that one far-future record cannot empty the rebuild.
        let bound_ms = record_time_bound_ms(self.dedup.max_clock_skew_secs);
        let bound_secs = (bound_ms / 1000).clamp(0, i64::from(u32::MAX)) as u32;
        let from_secs = dedup.rebuild_from_secs(progress.newest_record_secs.min(bound_secs));
        let remembered = self
            .store
            .remembered(topic, ledger_partition, from_secs, progress.next_offset)
            .await
            .map_err(TakeoverError::Remembered)?;
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
        Ok(PartitionStart { next_offset: progress.next_offset, counter, unfinished })
    }

    /// [`Takeover::open`], retried with backoff until the ledger answers; fails only at
    /// shutdown.
    pub async fn open_retrying(
        &self,
        topic: &str,
        partition: i32,
        shutdown: &CancellationToken,
    ) -> Result<PartitionStart, ShutdownWhileRetrying> {
        let mut backoff = flush_backoff();
        loop {
            match self.open(topic, partition).await {
                Ok(start) => return Ok(start),
                Err(e) => {
                    warn!(topic, partition, error = %e, "cannot take the partition over yet; retrying");
                    wait_before_retry(&mut backoff, shutdown, "taking a partition over").await?;
                }
            }
        }
    }
}

/// The latest Kafka record time believed now: the wall clock plus `max_clock_skew_secs`.
///
/// Record times are set by producers (CreateTime) and age the dedup memory; bounding them
/// keeps one record dated in the future from making every remembered identity look expired.
/// With `LogAppendTime` topics the broker sets them and this bound only guards against the
/// broker's clock.
pub fn record_time_bound_ms(max_clock_skew_secs: u32) -> i64 {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    now_ms + i64::from(max_clock_skew_secs) * 1000
}

#[cfg(test)]
mod tests;
