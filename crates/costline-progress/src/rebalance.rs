//! What happens to this worker's partitions when the group moves them.
//!
//! librdkafka calls the rebalance callback from the consumer's poll, i.e. from the worker's
//! own task, and a partition must be ready before its first record is fetched. So:
//!
//! - **assigned**: the take-over ([`Takeover`]) reads the partition's past from the ledger on
//!   the worker's tokio runtime, retrying with backoff (as async sleeps, cut short by
//!   shutdown) until the ledger answers; then a new ownership epoch starts and the counter is
//!   handed to the worker loop, in place before the partition's first record arrives.
//! - **revoked**: the epoch ends first, so that no lane writes a flush of the partition any
//!   more; then the callback waits until no job of ours holds it, and only then lets it go.
//!
//! Both wait inside the poll (`block_in_place`): a revoked partition must not be let go, nor an
//! assigned one fetched, before that. The changes reach the worker loop through a channel it
//! drains after each poll.

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::in_flight::InFlight;
use crate::ownership::Ownership;
use crate::store::LedgerStore;
use crate::takeover::{PartitionStart, Takeover};

/// A partition gained or lost.
pub enum PartitionChange {
    Assigned { partition: i32, start: Box<PartitionStart> },
    Revoked { partition: i32 },
}

/// The worker loop's end of the changes.
pub struct PartitionChanges {
    changes: mpsc::UnboundedReceiver<PartitionChange>,
}

impl PartitionChanges {
    /// Every change since the last call (cheap when there is none).
    pub fn drain(&mut self) -> Vec<PartitionChange> {
        let mut out = Vec::new();
        while let Ok(change) = self.changes.try_recv() {
            out.push(change);
        }
        out
    }
}

/// Takes partitions over and lets them go, from inside the rebalance callback.
pub struct Rebalance<S> {
    takeover: Takeover<S>,
    ownership: Arc<Ownership>,
    in_flight: Arc<InFlight>,
    runtime: Handle,
    shutdown: CancellationToken,
    changes: mpsc::UnboundedSender<PartitionChange>,
}

impl<S: LedgerStore> Rebalance<S> {
    /// Must be called on the worker's (multi-threaded) tokio runtime, whose thread polls the
    /// consumer.
    pub fn new(
        takeover: Takeover<S>,
        ownership: Arc<Ownership>,
        in_flight: Arc<InFlight>,
        shutdown: CancellationToken,
    ) -> (Rebalance<S>, PartitionChanges) {
        let (changes, receiver) = mpsc::unbounded_channel();
        let rebalance = Rebalance { takeover, ownership, in_flight, runtime: Handle::current(), shutdown, changes };
        (rebalance, PartitionChanges { changes: receiver })
    }

    /// Takes `partition` over; returns the offset to fetch it from. `None` only at shutdown:
    /// the partition is then left without a counter, and none of its records is counted here.
    pub fn assigned(&self, topic: &str, partition: i32) -> Option<u64> {
        let opened = tokio::task::block_in_place(|| {
            self.runtime.block_on(self.takeover.open_retrying(topic, partition, &self.shutdown))
        });
        match opened {
            Ok(start) => {
                let next_offset = start.next_offset;
                self.ownership.gain(partition);
                self.send(PartitionChange::Assigned { partition, start: Box::new(start) });
                Some(next_offset)
            }
            Err(e) => {
                warn!(topic, partition, error = %e, "partition not taken over");
                None
            }
        }
    }

    /// Ends `partition`'s epoch, waits until no job of ours holds it (or shutdown), and tells
    /// the worker loop to drop its counter.
    pub fn revoked(&self, partition: i32) {
        self.ownership.lose(partition);
        tokio::task::block_in_place(|| self.runtime.block_on(self.in_flight.released(partition, &self.shutdown)));
        self.send(PartitionChange::Revoked { partition });
    }

    fn send(&self, change: PartitionChange) {
        // The worker loop holds the receiver for as long as the consumer lives; once it is
        // gone, nothing counts any more and the change has no one to tell.
        let _ = self.changes.send(change);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use costline_clickhouse::Targets;

    use super::*;
    use crate::fake_ledger::{row, FakeLedger};
    use crate::takeover::DedupSettings;

    fn rebalance(ledger: &FakeLedger, in_flight: Arc<InFlight>) -> (Rebalance<FakeLedger>, PartitionChanges) {
        let dedup = DedupSettings { horizon_secs: 60, grace_secs: 60, max_clock_skew_secs: 60 };
        let ownership = Arc::new(Ownership::new(Arc::new(|| false)));
        Rebalance::new(Takeover::new(ledger.clone(), dedup), ownership, in_flight, CancellationToken::new())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_assigned_partition_starts_at_the_ledger_progress_under_a_new_epoch() {
        let ledger = FakeLedger::default();
        ledger.apply(&row(5, 0, 17, false, false), Targets::ALL);
        ledger.fail_reads(2); // The ledger is away for a moment: the take-over waits for it.
        let (rebalance, mut changes) = rebalance(&ledger, Arc::default());
        assert_eq!(rebalance.assigned("usage", 5), Some(17));
        let epoch = rebalance.ownership.epoch(5).unwrap();
        assert!(rebalance.ownership.holds(5, epoch));
        let drained = changes.drain();
        assert!(
            matches!(drained[..], [PartitionChange::Assigned { partition: 5, ref start }] if start.next_offset == 17)
        );
        assert!(changes.drain().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revoked_partition_is_let_go_only_once_no_flush_of_it_is_in_flight() {
        let ledger = FakeLedger::default();
        let in_flight = Arc::new(InFlight::default());
        let (rebalance, mut changes) = rebalance(&ledger, in_flight.clone());
        rebalance.assigned("usage", 2);
        let epoch = rebalance.ownership.epoch(2).unwrap();
        in_flight.add([2].into_iter());
        let written = Arc::new(AtomicBool::new(false));
        let lane = {
            let (in_flight, written) = (in_flight.clone(), written.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                written.store(true, Ordering::SeqCst);
                in_flight.remove([2].into_iter());
            })
        };
        rebalance.revoked(2);
        assert!(written.load(Ordering::SeqCst), "the revoke returned while a flush held the partition");
        assert!(!rebalance.ownership.holds(2, epoch), "the epoch ended");
        lane.await.unwrap();
        let drained = changes.drain();
        assert!(matches!(drained[..], [PartitionChange::Assigned { .. }, PartitionChange::Revoked { partition: 2 }]));
    }
}
