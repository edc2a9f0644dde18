//! The lanes end to end against the fake ledger: completing an unfinished flush, fencing
//! during a job, dead letters first.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use costline_clickhouse::Targets;
use costline_core::{Outcome, RecordMeta};
use tokio_util::sync::CancellationToken;

use super::{Fencing, FlushQueue, Handover, LaneSettings};
use crate::fake_ledger::{event, prices, row, FakeLedger, TABLES};
use crate::lane::{DeadLetters, FlushReport};
use crate::partitions::OwnedPartitions;
use crate::settle::WriteReport;
use crate::takeover::{DedupSettings, Takeover};
use crate::{InFlight, Ownership};

/// A dead letter: partition and offset.
type Letter = (i32, u64);

/// Refuses the first `refusals` publishes; when told, revokes the letters' partitions while
/// publishing them (a rebalance during the job).
#[derive(Clone, Default)]
struct FakeDeadLetters {
    refusals: Arc<Mutex<u32>>,
    published: Arc<Mutex<Vec<Letter>>>,
    revoke_during: Option<Arc<Ownership>>,
    /// Ledger calls seen when the letters were delivered.
    ledger: FakeLedger,
    ledger_calls_at_delivery: Arc<Mutex<Option<usize>>>,
}

impl DeadLetters for FakeDeadLetters {
    type Letter = Letter;

    fn partition(letter: &Letter) -> i32 {
        letter.0
    }

    async fn publish(&self, letters: Vec<Letter>) -> Vec<Letter> {
        if let Some(ownership) = &self.revoke_during {
            letters.iter().for_each(|&(partition, _)| ownership.lose(partition));
        }
        let mut refusals = self.refusals.lock().unwrap();
        if *refusals > 0 {
            *refusals -= 1;
            return letters;
        }
        *self.ledger_calls_at_delivery.lock().unwrap() = Some(self.ledger.calls().len());
        self.published.lock().unwrap().extend(letters);
        Vec::new()
    }
}

#[derive(Default)]
struct Reports {
    dropped: Mutex<u32>,
    jobs: Mutex<Vec<Vec<(i32, u64)>>>,
    readiness: Mutex<Vec<bool>>,
}

impl WriteReport for Reports {
    fn insert_took(&self, _elapsed: Duration) {}
    fn insert_failed(&self) {}
    fn row_dropped(&self) {
        *self.dropped.lock().unwrap() += 1;
    }
    fn partial_write_found(&self) {}
}

impl FlushReport for Reports {
    fn job_done(&self, _elapsed: Duration, written: &[(i32, u64)]) {
        self.jobs.lock().unwrap().push(written.to_vec());
    }
    fn ready(&self, ready: bool) {
        let mut readiness = self.readiness.lock().unwrap();
        if readiness.last() != Some(&ready) {
            readiness.push(ready);
        }
    }
}

struct Worker {
    ledger: FakeLedger,
    fencing: Fencing,
    partitions: OwnedPartitions,
    reports: Arc<Reports>,
}

impl Worker {
    fn new(ledger: &FakeLedger) -> Worker {
        let fencing = Fencing {
            in_flight: Arc::new(InFlight::default()),
            ownership: Arc::new(Ownership::new(Arc::new(|| false))),
        };
        Worker { ledger: ledger.clone(), fencing, partitions: OwnedPartitions::default(), reports: Arc::default() }
    }

    fn queue(&self, dead_letters: FakeDeadLetters) -> FlushQueue<FakeDeadLetters> {
        self.queue_with_lanes(dead_letters, 2)
    }

    fn queue_with_lanes(&self, dead_letters: FakeDeadLetters, lanes: usize) -> FlushQueue<FakeDeadLetters> {
        let settings = LaneSettings { lanes, topic: "usage".into(), worker_id: "w".into() };
        let shutdown = CancellationToken::new();
        FlushQueue::start(
            self.ledger.clone(),
            dead_letters,
            self.reports.clone(),
            settings,
            self.fencing.clone(),
            shutdown,
        )
    }

    async fn take_over(&mut self, partition: i32) {
        let dedup = DedupSettings { horizon_secs: 3600, grace_secs: 600, max_clock_skew_secs: 300 };
        let start = Takeover::new(self.ledger.clone(), dedup).open("usage", partition).await.unwrap();
        self.fencing.ownership.gain(partition);
        self.partitions.assign(partition, start, i64::MAX);
    }

    fn count(&mut self, partition: i32, offset: u64, payload: &[u8]) -> bool {
        let counter = self.partitions.counter_mut(partition).unwrap();
        let meta = RecordMeta { offset, timestamp_ms: 1_746_093_630_000 };
        assert!(!matches!(counter.count(meta, None, payload, &prices()), Outcome::Duplicate));
        self.partitions.completes_unfinished(partition)
    }
}

#[tokio::test]
async fn the_replay_completes_a_half_applied_flush_in_the_tables_that_lack_it() {
    let ledger = FakeLedger::default();
    ledger.apply(&row(0, 0, 3, true, false), Targets::EVENTS.with(Targets::MINUTE));
    let mut worker = Worker::new(&ledger);
    worker.take_over(0).await;
    let mut queue = worker.queue(FakeDeadLetters::default());
    assert!(!worker.count(0, 0, &event("a")));
    assert!(!worker.count(0, 1, &event("b")));
    queue.flush(&mut worker.partitions, Handover::IfRoom).await.unwrap();
    assert!(worker.count(0, 2, &event("c")), "the replay reached the unfinished flush's end");
    queue.flush(&mut worker.partitions, Handover::Wait).await.unwrap();
    assert_eq!(queue.finish().await.unwrap(), [(0, 3)]);
    for table in TABLES.into_iter().filter(|&table| table != Targets::REJECTS) {
        assert_eq!(ledger.received(0, 3, table), 1, "table {}", table.bits());
    }
    assert_eq!(ledger.calls().iter().filter(|c| c.starts_with("write")).count(), 1, "one batch, ending at 3");
}

#[tokio::test]
async fn a_job_whose_partition_is_lost_meanwhile_is_dropped_and_not_committed() {
    let ledger = FakeLedger::default();
    let mut worker = Worker::new(&ledger);
    worker.take_over(1).await;
    worker.take_over(2).await;
    let dead_letters =
        FakeDeadLetters { revoke_during: Some(worker.fencing.ownership.clone()), ..FakeDeadLetters::default() };
    let mut queue = worker.queue(dead_letters.clone());
    worker.count(1, 0, b"{not json");
    queue.dead_letter((1, 0));
    worker.count(2, 0, &event("kept"));
    queue.flush(&mut worker.partitions, Handover::Wait).await.unwrap();
    let committed = queue.finish().await.unwrap();
    assert_eq!(committed, [(2, 1)], "partition 1 was revoked while its job was under way");
    assert_eq!(TABLES.map(|table| ledger.received(1, 1, table)), [0; 6]);
    assert_eq!(ledger.received(2, 1, Targets::PROGRESS), 1);
    assert_eq!(*worker.reports.dropped.lock().unwrap(), 1);
    // The letter was under way when the partition went (dead letters are at least once).
    assert_eq!(*dead_letters.published.lock().unwrap(), [(1, 0)]);
}

#[tokio::test]
async fn dead_letters_are_delivered_before_the_rows_and_a_refusal_makes_the_worker_unready() {
    let ledger = FakeLedger::default();
    let mut worker = Worker::new(&ledger);
    worker.take_over(0).await;
    let dead_letters =
        FakeDeadLetters { refusals: Arc::new(Mutex::new(2)), ledger: ledger.clone(), ..Default::default() };
    let mut queue = worker.queue(dead_letters.clone());
    let calls_before = ledger.calls().len();
    worker.count(0, 0, b"{not json");
    queue.dead_letter((0, 0));
    queue.dead_letter((5, 9)); // Another partition's letter waits for that partition's flush.
    queue.flush(&mut worker.partitions, Handover::Wait).await.unwrap();
    queue.forget(5);
    assert_eq!(queue.finish().await.unwrap(), [(0, 1)]);
    assert_eq!(*dead_letters.published.lock().unwrap(), [(0, 0)]);
    let calls_at_delivery = *dead_letters.ledger_calls_at_delivery.lock().unwrap();
    assert_eq!(calls_at_delivery, Some(calls_before), "no insert before the letters");
    assert_eq!(ledger.received(0, 1, Targets::REJECTS), 1);
    assert_eq!(*worker.reports.readiness.lock().unwrap(), [false, true]);
    assert_eq!(*worker.reports.jobs.lock().unwrap(), [vec![(0, 1)]]);
}

#[tokio::test]
async fn revoking_a_partition_drops_its_counter_and_pending_records() {
    let ledger = FakeLedger::default();
    let mut worker = Worker::new(&ledger);
    worker.take_over(3).await;
    worker.count(3, 0, &event("x"));
    assert_eq!(worker.partitions.revoke(3), Some(1));
    assert_eq!(worker.partitions.revoke(3), None);
    assert!(worker.partitions.partitions().is_empty());
}

#[tokio::test]
async fn a_lane_a_job_behind_is_skipped_and_its_partition_keeps_its_batch() {
    let ledger = FakeLedger::default();
    let mut worker = Worker::new(&ledger);
    worker.take_over(0).await;
    let mut queue = worker.queue_with_lanes(FakeDeadLetters::default(), 1);
    let gate = ledger.hold_writes();
    let pending = |worker: &mut Worker| worker.partitions.counter_mut(0).unwrap().pending_records();
    worker.count(0, 0, &event("a"));
    queue.flush(&mut worker.partitions, Handover::IfRoom).await.unwrap();
    assert_eq!(pending(&mut worker), 0, "handed over: the lane had room");
    worker.count(0, 1, &event("b"));
    queue.flush(&mut worker.partitions, Handover::IfRoom).await.unwrap();
    assert_eq!(pending(&mut worker), 1, "the first job still waits for the lane: the batch stays open");
    tokio::task::yield_now().await; // The lane takes the first job and waits for ClickHouse.
    queue.flush(&mut worker.partitions, Handover::IfRoom).await.unwrap();
    assert_eq!(pending(&mut worker), 0, "one job written, one waiting");
    worker.count(0, 2, &event("c"));
    queue.flush(&mut worker.partitions, Handover::IfRoom).await.unwrap();
    assert_eq!(pending(&mut worker), 1);
    assert!(queue.completed().is_empty(), "nothing written yet");
    gate.add_permits(3);
    queue.flush(&mut worker.partitions, Handover::Wait).await.unwrap();
    assert_eq!(pending(&mut worker), 0, "waited for room");
    assert_eq!(queue.finish().await.unwrap(), [(0, 1), (0, 2), (0, 3)], "written in order");
    for end in 1..=3 {
        assert_eq!(ledger.received(0, end, Targets::PROGRESS), 1);
    }
}
