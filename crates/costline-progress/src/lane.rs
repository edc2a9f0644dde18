//! A writer lane: a task that writes its jobs in order, each exactly once. Dead letters go to
//! Kafka first (so a rejected record is never only in ClickHouse), then the job's rows as one
//! insert ([`ExactWriter`]); then the offsets go back to the consumer to commit. Rows and
//! letters of a partition that is no longer ours under the epoch they were counted in are
//! dropped: the partition's next owner redoes them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use costline_clickhouse::LedgerRow;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::in_flight::InFlight;
use crate::ownership::Ownership;
use crate::retry::{flush_backoff, wait_before_retry, ShutdownWhileRetrying};
use crate::settle::{ExactWriter, WriteReport};
use crate::store::LedgerStore;

/// Where a job's rejected records are published before its rows are written.
pub trait DeadLetters: Clone + Send + Sync + 'static {
    type Letter: Send + 'static;

    /// The partition the letter's record was read from.
    fn partition(letter: &Self::Letter) -> i32;

    /// Publishes `letters`; returns those to try again (the others were delivered, or given
    /// up because no retry could deliver them).
    fn publish(&self, letters: Vec<Self::Letter>) -> impl Future<Output = Vec<Self::Letter>> + Send;
}

/// What the lanes tell the worker's metrics and readiness.
pub trait FlushReport: WriteReport + Send + Sync + 'static {
    /// A job is done after `elapsed`; `written` is each partition's new progress.
    fn job_done(&self, elapsed: Duration, written: &[(i32, u64)]);
    /// Whether no lane is stuck on a flush it cannot write.
    fn ready(&self, ready: bool);
}

/// What one flush writes.
pub struct FlushJob<L> {
    pub(crate) rows: Vec<LedgerRow>,
    /// The assignment epoch each row's partition was counted under (one row per partition).
    pub(crate) epochs: HashMap<i32, u64>,
    pub(crate) dead_letters: Vec<L>,
    /// `(partition, next_offset)` to commit once written.
    pub(crate) commits: Vec<(i32, u64)>,
}

/// Whether each lane is stuck: the worker is ready while none is.
pub(crate) struct LaneHealth<R> {
    stuck: AtomicBool,
    stuck_lanes: Arc<AtomicUsize>,
    report: Arc<R>,
}

impl<R: FlushReport> LaneHealth<R> {
    pub(crate) fn new(stuck_lanes: Arc<AtomicUsize>, report: Arc<R>) -> Self {
        LaneHealth { stuck: AtomicBool::new(false), stuck_lanes, report }
    }

    fn set_stuck(&self, stuck: bool) {
        if self.stuck.swap(stuck, Ordering::SeqCst) != stuck {
            if stuck {
                self.stuck_lanes.fetch_add(1, Ordering::SeqCst);
            } else {
                self.stuck_lanes.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.report.ready(self.stuck_lanes.load(Ordering::SeqCst) == 0);
    }
}

impl<R: FlushReport> WriteReport for LaneHealth<R> {
    fn insert_took(&self, elapsed: Duration) {
        self.report.insert_took(elapsed);
    }

    fn insert_failed(&self) {
        self.report.insert_failed();
        self.set_stuck(true);
    }

    fn row_dropped(&self) {
        self.report.row_dropped();
    }

    fn partial_write_found(&self) {
        self.report.partial_write_found();
    }
}

/// One lane's task.
pub(crate) struct FlushLane<S, D: DeadLetters, R> {
    pub(crate) writer: ExactWriter<S>,
    pub(crate) dead_letters: D,
    pub(crate) health: LaneHealth<R>,
    pub(crate) in_flight: Arc<InFlight>,
    pub(crate) ownership: Arc<Ownership>,
    pub(crate) completed: mpsc::UnboundedSender<Vec<(i32, u64)>>,
    pub(crate) shutdown: CancellationToken,
}

impl<S: LedgerStore, D: DeadLetters, R: FlushReport> FlushLane<S, D, R> {
    pub(crate) async fn run(
        mut self,
        mut jobs: mpsc::Receiver<FlushJob<D::Letter>>,
    ) -> Result<(), ShutdownWhileRetrying> {
        while let Some(job) = jobs.recv().await {
            let started = Instant::now();
            let FlushJob { rows, epochs, dead_letters, commits } = job;
            let ownership = self.ownership.clone();
            let owns = |partition: i32| epochs.get(&partition).is_some_and(|&epoch| ownership.holds(partition, epoch));
            let written = async {
                self.deliver_dead_letters(dead_letters, &owns).await?;
                self.writer.write(rows, &owns, &self.health).await
            }
            .await;
            self.in_flight.remove(commits.iter().map(|&(partition, _)| partition));
            let dropped = written?;
            self.health.set_stuck(false);
            let commits: Vec<(i32, u64)> = commits.into_iter().filter(|(p, _)| !dropped.contains(p)).collect();
            self.health.report.job_done(started.elapsed(), &commits);
            // The consumer takes the offsets when it next flushes; once it is gone, nothing
            // is committed any more.
            let _ = self.completed.send(commits);
        }
        Ok(())
    }

    /// Publishes a job's dead letters before its rows are written, retrying what the broker
    /// refuses for now (the lane is stuck meanwhile). A lost partition's letters are dropped:
    /// its next owner publishes them again.
    async fn deliver_dead_letters(
        &self,
        mut letters: Vec<D::Letter>,
        owns: &impl Fn(i32) -> bool,
    ) -> Result<(), ShutdownWhileRetrying> {
        let mut backoff = flush_backoff();
        loop {
            letters.retain(|letter| owns(D::partition(letter)));
            if letters.is_empty() {
                return Ok(());
            }
            letters = self.dead_letters.publish(letters).await;
            if !letters.is_empty() {
                self.health.set_stuck(true);
                let stuck = "the dead-letter topic was refusing a flush's rejected records";
                wait_before_retry(&mut backoff, &self.shutdown, stuck).await?;
            }
        }
    }
}
