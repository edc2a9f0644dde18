//! The consumer's side of writing: closes every ready partition batch into a ledger row and
//! hands it to one of `clickhouse.insert_streams` writer lanes ([`crate::lane`]). A partition
//! keeps its lane while this worker holds it, so its flushes land in order; lanes do not wait
//! for each other, so ClickHouse always has an insert to work on while another lane delivers
//! dead letters or waits for its answer. Each lane writes one job while at most one more
//! waits. A lane that is a job behind is not waited for: its partitions keep their open
//! batches, and the worker pauses fetching once too much is pending, while it goes on
//! polling, so that the group does not drop a worker that is merely stuck behind ClickHouse.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use costline_clickhouse::LedgerRow;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::in_flight::InFlight;
use crate::lane::{DeadLetters, FlushJob, FlushLane, FlushReport, LaneHealth};
use crate::lanes::PartitionLanes;
use crate::ownership::Ownership;
use crate::partitions::OwnedPartitions;
use crate::retry::{flush_backoff, ShutdownWhileRetrying};
use crate::settle::ExactWriter;
use crate::store::LedgerStore;

/// Whether [`FlushQueue::flush`] may wait for a lane that is a job behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// Hand over only to lanes with room; other partitions keep their batches for later.
    /// The consumer loop never waits for ClickHouse, so it keeps polling (and learns of
    /// rebalances) while a lane retries.
    IfRoom,
    /// Wait for room (to complete an unfinished flush, and at shutdown).
    Wait,
}

/// A writer lane stopped.
#[derive(Debug, thiserror::Error)]
pub enum LaneStopped {
    #[error(transparent)]
    Shutdown(#[from] ShutdownWhileRetrying),
    #[error("a flush writer lane failed: {0}")]
    Failed(#[from] tokio::task::JoinError),
    #[error("a flush writer lane stopped")]
    Stopped,
}

/// How the lanes are set up.
pub struct LaneSettings {
    /// Writer lanes (`clickhouse.insert_streams`; at least one).
    pub lanes: usize,
    pub topic: String,
    /// Names this worker in `flushes.worker` and in query ids.
    pub worker_id: String,
}

/// What the worker shares with its lanes and its rebalance callback.
#[derive(Clone)]
pub struct Fencing {
    pub in_flight: Arc<InFlight>,
    pub ownership: Arc<Ownership>,
}

/// One writer lane, as the consumer sees it.
struct Lane<L> {
    jobs: mpsc::Sender<FlushJob<L>>,
    writer: JoinHandle<Result<(), ShutdownWhileRetrying>>,
}

/// Closes batches into jobs and hands them to the writer lanes.
pub struct FlushQueue<D: DeadLetters> {
    topic: String,
    worker_id: String,
    lanes: Vec<Lane<D::Letter>>,
    lane_of: PartitionLanes,
    completed: mpsc::UnboundedReceiver<Vec<(i32, u64)>>,
    fencing: Fencing,
    dead_letters: Vec<D::Letter>,
}

impl<D: DeadLetters> FlushQueue<D> {
    /// Starts the writer lanes.
    pub fn start<S: LedgerStore, R: FlushReport>(
        store: S,
        dead_letters: D,
        report: Arc<R>,
        settings: LaneSettings,
        fencing: Fencing,
        shutdown: CancellationToken,
    ) -> FlushQueue<D> {
        let (completed_sender, completed) = mpsc::unbounded_channel();
        let stuck_lanes = Arc::new(AtomicUsize::new(0));
        let lane_count = settings.lanes.max(1);
        let lanes = (0..lane_count)
            .map(|lane| {
                let (jobs, receiver) = mpsc::channel(1);
                let query_prefix = format!("{}-{lane}", settings.worker_id);
                let writer = FlushLane {
                    writer: ExactWriter::new(
                        store.clone(),
                        &settings.topic,
                        query_prefix,
                        flush_backoff(),
                        shutdown.clone(),
                    ),
                    dead_letters: dead_letters.clone(),
                    health: LaneHealth::new(stuck_lanes.clone(), report.clone()),
                    in_flight: fencing.in_flight.clone(),
                    ownership: fencing.ownership.clone(),
                    completed: completed_sender.clone(),
                    shutdown: shutdown.clone(),
                };
                Lane { jobs, writer: tokio::spawn(writer.run(receiver)) }
            })
            .collect();
        FlushQueue {
            topic: settings.topic,
            worker_id: settings.worker_id,
            lanes,
            lane_of: PartitionLanes::new(lane_count),
            completed,
            fencing,
            dead_letters: Vec::new(),
        }
    }

    /// Queues a rejected record for the dead-letter topic; it goes with its partition's next
    /// flush.
    pub fn dead_letter(&mut self, letter: D::Letter) {
        self.dead_letters.push(letter);
    }

    /// Drops what was queued for a partition that moved away (its next owner redoes it). No job
    /// holds it any more (a revoke waits for that), so it can write through another lane if it
    /// comes back.
    pub fn forget(&mut self, partition: i32) {
        self.dead_letters.retain(|letter| D::partition(letter) != partition);
        self.lane_of.forget(partition);
    }

    /// Closes every ready batch into a job per lane and hands them over. With
    /// [`Handover::IfRoom`] a lane that is a job behind is skipped: its partitions keep their
    /// open batches. A partition completing an unfinished flush is ready only once its batch
    /// reaches that flush's end, and its row goes only to the tables that lack it.
    pub async fn flush(&mut self, partitions: &mut OwnedPartitions, handover: Handover) -> Result<(), LaneStopped> {
        let flushed_at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or_default();
        let mut rows: Vec<Vec<LedgerRow>> = self.lanes.iter().map(|_| Vec::new()).collect();
        let mut epochs: Vec<HashMap<i32, u64>> = self.lanes.iter().map(|_| HashMap::new()).collect();
        let (counters, unfinished) = partitions.parts_mut();
        for (&partition, counter) in counters.iter_mut() {
            let completing = unfinished.get(&partition).copied();
            if counter.pending_records() == 0 || completing.is_some_and(|f| counter.next_offset() < f.next_offset) {
                continue;
            }
            let lane = self.lane_of.lane(partition);
            // Only this task sends to a lane, so room seen here is still there at the send.
            if handover == Handover::IfRoom && self.lanes[lane].jobs.capacity() == 0 {
                continue;
            }
            let Some(epoch) = self.fencing.ownership.epoch(partition) else {
                continue; // Revoked inside the last poll; the worker drops its counter next.
            };
            let mut row =
                LedgerRow::from_batch(counter.take_batch(), &self.topic, partition as u32, &self.worker_id, flushed_at);
            if let Some(flush) = completing {
                row.targets = flush.missing();
                unfinished.remove(&partition);
            }
            rows[lane].push(row);
            epochs[lane].insert(partition, epoch);
        }
        for (lane, (mut rows, epochs)) in rows.into_iter().zip(epochs).enumerate() {
            if rows.is_empty() {
                continue;
            }
            rows.sort_by_key(|row| row.kafka_partition);
            let commits: Vec<(i32, u64)> = rows.iter().map(|r| (r.kafka_partition as i32, r.next_offset)).collect();
            let flushed: Vec<i32> = commits.iter().map(|&(p, _)| p).collect();
            let (dead_letters, kept) = std::mem::take(&mut self.dead_letters)
                .into_iter()
                .partition(|letter| flushed.contains(&D::partition(letter)));
            self.dead_letters = kept;
            self.fencing.in_flight.add(flushed.iter().copied());
            if self.lanes[lane].jobs.send(FlushJob { rows, epochs, dead_letters, commits }).await.is_err() {
                self.fencing.in_flight.remove(flushed.into_iter());
                return Err(self.lane_failure(lane).await);
            }
        }
        Ok(())
    }

    /// Offsets of the jobs written since the last call.
    pub fn completed(&mut self) -> Vec<(i32, u64)> {
        let mut out = Vec::new();
        while let Ok(commits) = self.completed.try_recv() {
            out.extend(commits);
        }
        out
    }

    /// Waits until every job handed over is written; returns the offsets not yet taken.
    pub async fn finish(mut self) -> Result<Vec<(i32, u64)>, LaneStopped> {
        let writers: Vec<_> = self.lanes.drain(..).map(|lane| lane.writer).collect();
        for writer in writers {
            writer.await??;
        }
        Ok(self.completed())
    }

    async fn lane_failure(&mut self, lane: usize) -> LaneStopped {
        match (&mut self.lanes[lane].writer).await {
            Ok(Ok(())) => LaneStopped::Stopped,
            Ok(Err(e)) => e.into(),
            Err(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests;
