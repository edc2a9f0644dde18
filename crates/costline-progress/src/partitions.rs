//! The partitions this worker counts: a counter each, and for a partition taken over from an
//! owner that died mid-flush, the [`UnfinishedFlush`] its first batch must complete.

use std::collections::HashMap;

use costline_core::PartitionCounter;
use tracing::error;

use crate::takeover::{PartitionStart, Replay, UnfinishedFlush};

#[derive(Default)]
pub struct OwnedPartitions {
    counters: HashMap<i32, PartitionCounter>,
    unfinished: HashMap<i32, UnfinishedFlush>,
}

impl OwnedPartitions {
    /// Starts counting a partition just taken over; its record times are bounded by
    /// `record_time_bound_ms` until the next flush refreshes the bound.
    pub fn assign(&mut self, partition: i32, start: PartitionStart, record_time_bound_ms: i64) {
        let PartitionStart { mut counter, unfinished, .. } = start;
        counter.bound_record_times(record_time_bound_ms);
        self.counters.insert(partition, counter);
        match unfinished {
            Some(flush) => self.unfinished.insert(partition, flush),
            None => self.unfinished.remove(&partition),
        };
    }

    /// Stops counting a revoked partition. Its unflushed records are dropped: they were not
    /// committed, and its next owner reads them again from the ledger's progress on. Returns
    /// how many were dropped, `None` if the partition was not counted here.
    pub fn revoke(&mut self, partition: i32) -> Option<u64> {
        self.unfinished.remove(&partition);
        self.counters.remove(&partition).map(|counter| counter.pending_records())
    }

    pub fn counter_mut(&mut self, partition: i32) -> Option<&mut PartitionCounter> {
        self.counters.get_mut(&partition)
    }

    /// Whether `partition`'s replay has reached the end of the flush a previous owner left
    /// half-applied: its batch must then be written before it counts one record more.
    pub fn completes_unfinished(&self, partition: i32) -> bool {
        let (Some(flush), Some(counter)) = (self.unfinished.get(&partition), self.counters.get(&partition)) else {
            return false;
        };
        match flush.replay_at(counter.next_offset()) {
            Replay::Short => false,
            Replay::AtEnd => true,
            Replay::Passed => {
                error!(
                    partition,
                    expected = flush.next_offset,
                    at = counter.next_offset(),
                    "replay passed the end of an unfinished flush"
                );
                true
            }
        }
    }

    /// Bounds every counter's record times (refreshed at each flush).
    pub fn bound_record_times(&mut self, record_time_bound_ms: i64) {
        for counter in self.counters.values_mut() {
            counter.bound_record_times(record_time_bound_ms);
        }
    }

    pub fn partitions(&self) -> Vec<i32> {
        self.counters.keys().copied().collect()
    }

    pub fn counters(&self) -> impl Iterator<Item = &PartitionCounter> {
        self.counters.values()
    }

    /// Counters with their partitions, and the unfinished flushes, for closing batches.
    pub(crate) fn parts_mut(&mut self) -> (&mut HashMap<i32, PartitionCounter>, &mut HashMap<i32, UnfinishedFlush>) {
        (&mut self.counters, &mut self.unfinished)
    }
}
