//! Fencing: which partitions this worker still owns, as the writer lanes see them.
//!
//! A flush is written by a lane task while the consumer goes on; a retried flush can be
//! seconds or minutes late (an outage). If the partition moved to another worker meanwhile,
//! that worker replays from the progress it read and writes the same records again, so a late
//! write of ours would count them twice. Every flush therefore carries the *epoch* of the
//! assignment it was counted under, and a lane writes (or retries) it only while that epoch is
//! current and the consumer has not lost its assignment (a member that stopped polling or
//! heartbeating is dropped by the group before its rebalance callback runs: librdkafka's
//! `assignment_lost`). A revoke ends the epoch first, then waits for the lanes to let go.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Asks the consumer whether the group has taken its assignment away behind its back.
pub type AssignmentLost = Arc<dyn Fn() -> bool + Send + Sync>;

/// The epoch of each partition this worker holds.
pub struct Ownership {
    epochs: Mutex<HashMap<i32, u64>>,
    next_epoch: AtomicU64,
    assignment_lost: AssignmentLost,
}

impl Ownership {
    pub fn new(assignment_lost: AssignmentLost) -> Ownership {
        Ownership { epochs: Mutex::new(HashMap::new()), next_epoch: AtomicU64::new(1), assignment_lost }
    }

    fn epochs(&self) -> MutexGuard<'_, HashMap<i32, u64>> {
        // Only single inserts, removals and reads happen under this lock, none of which can
        // panic; a poisoned lock means fencing can no longer be trusted, so the worker stops.
        self.epochs.lock().expect("the ownership epochs' lock was poisoned by a panic")
    }

    /// Starts a new epoch for `partition` (it was just assigned).
    pub fn gain(&self, partition: i32) -> u64 {
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed);
        self.epochs().insert(partition, epoch);
        epoch
    }

    /// Ends `partition`'s epoch: no flush counted under it is written from now on.
    pub fn lose(&self, partition: i32) {
        self.epochs().remove(&partition);
    }

    /// The current epoch of `partition`, if held.
    pub fn epoch(&self, partition: i32) -> Option<u64> {
        self.epochs().get(&partition).copied()
    }

    /// Whether a flush of `partition` counted under `epoch` may still be written.
    pub fn holds(&self, partition: i32, epoch: u64) -> bool {
        self.epoch(partition) == Some(epoch) && !(self.assignment_lost)()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    #[test]
    fn a_flush_is_written_only_under_the_epoch_it_was_counted_in() {
        let lost = Arc::new(AtomicBool::new(false));
        let probe = lost.clone();
        let ownership = Ownership::new(Arc::new(move || probe.load(Ordering::Relaxed)));
        let first = ownership.gain(3);
        assert!(ownership.holds(3, first));
        assert!(!ownership.holds(4, first), "a partition never assigned");
        ownership.lose(3);
        assert!(!ownership.holds(3, first), "revoked");
        let second = ownership.gain(3);
        assert!(!ownership.holds(3, first), "assigned again: the old epoch's flushes stay fenced");
        assert!(ownership.holds(3, second));
        lost.store(true, Ordering::Relaxed);
        assert!(!ownership.holds(3, second), "the group dropped this member before its callback ran");
    }

    #[test]
    #[should_panic(expected = "poisoned")]
    fn a_poisoned_lock_stops_the_worker() {
        let ownership = Arc::new(Ownership::new(Arc::new(|| false)));
        let holder = ownership.clone();
        let _ = std::thread::spawn(move || {
            let _guard = holder.epochs.lock();
            panic!("while holding the lock");
        })
        .join();
        ownership.gain(1);
    }
}
