//! Writing flushes, exactly once, while the worker goes on consuming.
//!
//! The consumer side ([`FlushQueue`]) closes every ready partition batch into a ledger row and
//! hands it to one of `clickhouse.insert_streams` writer lanes ([`FlushWriter`]), each a task
//! that writes its jobs in order: dead letters to Kafka first (so a rejected record is never
//! only in ClickHouse), then the job's rows as one `INSERT`; then the offsets go back to the
//! consumer to commit. A partition keeps its lane while this worker holds it, so its flushes
//! land in order; lanes do not wait for each other, so ClickHouse always has an insert to work
//! on while another lane delivers dead letters or waits for its answer (when every flush waited
//! for the slowest of its inserts, the worker waited with it: BENCHMARKS.md).
//! Each lane writes one job while at most one more waits. A lane that is a job behind is not
//! waited for: its partitions keep their open batches, and once `pipeline.max_pending_records`
//! are pending the worker pauses fetching, while it goes on polling, so that the group does
//! not drop a worker that is merely stuck behind ClickHouse.
//! A partition that is being revoked ends its ownership epoch first (`ownership`): a lane
//! drops rows of a partition that is no longer ours instead of retrying them, and the revoke
//! waits until no job holds it, so its next owner never reads progress that one of our
//! inserts is still about to change.
//!
//! When an insert fails, the worker cannot know what ClickHouse applied: a timeout or a dropped
//! connection can hide a success, and a server failing half-way through the fan-out (seen when
//! ClickHouse shuts down during an insert) leaves some tables written and others not. Before
//! writing again the worker kills that query on the server (`KILL QUERY … SYNC`, so it cannot
//! land later), asks each table whether it holds the flush, and retries the row with only the
//! missing tables in its `targets`. Each table thus receives each flush once; a failed flush
//! is retried with exponential backoff for as long as its partition stays ours, `/readyz`
//! reports the outage meanwhile, and a row whose partition another writer has advanced past
//! its start is dropped, never retried.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use costline_clickhouse::{LedgerRow, LedgerSink, Targets};
use costline_core::PartitionCounter;
use costline_kafka::{delivered, is_permanent, DeliveryFuture, KafkaError, RecordProducer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::config::Config;
use crate::http::Telemetry;
use crate::worker::ownership::Ownership;
use crate::worker::partitions::UnfinishedFlush;

const MAX_BACKOFF: Duration = Duration::from_secs(5);
const CLICKHOUSE_STUCK: &str = "ClickHouse was refusing a flush";

/// A rejected record on its way to the dead-letter topic: its payload cut to
/// `kafka.dead_letter_max_payload_bytes` (a record too large for the producer would otherwise
/// fail forever and hold every flush behind it), with its full size beside it.
struct DeadLetter {
    partition: i32,
    offset: u64,
    payload: Vec<u8>,
    payload_bytes: usize,
    reason_code: &'static str,
    reason: String,
}

impl DeadLetter {
    fn truncated(&self) -> bool {
        self.payload.len() < self.payload_bytes
    }
}

/// What one flush writes.
pub struct FlushJob {
    rows: Vec<LedgerRow>,
    /// The assignment epoch each row's partition was counted under (one row per partition).
    epochs: HashMap<i32, u64>,
    dead_letters: Vec<DeadLetter>,
    /// `(partition, next_offset)` to commit once written.
    commits: Vec<(i32, u64)>,
}

/// Whether [`FlushQueue::flush`] may wait for a lane that is a job behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// Hand over only to lanes with room; other partitions keep their batches for later.
    /// The consumer loop never waits for ClickHouse, so it keeps polling (and learns of
    /// rebalances) while a lane retries.
    IfRoom,
    /// Wait for room (at shutdown: everything pending is written).
    Wait,
}

/// Partitions with a flush queued or being written.
#[derive(Default)]
pub struct InFlight {
    jobs: Mutex<HashMap<i32, usize>>,
    changed: Condvar,
}

impl InFlight {
    fn add(&self, partitions: impl Iterator<Item = i32>) {
        if let Ok(mut jobs) = self.jobs.lock() {
            for partition in partitions {
                *jobs.entry(partition).or_default() += 1;
            }
        }
    }

    fn remove(&self, partitions: impl Iterator<Item = i32>) {
        if let Ok(mut jobs) = self.jobs.lock() {
            for partition in partitions {
                if let Some(count) = jobs.get_mut(&partition) {
                    *count -= 1;
                    if *count == 0 {
                        jobs.remove(&partition);
                    }
                }
            }
        }
        self.changed.notify_all();
    }

    /// Blocks until no job holds `partition` (or shutdown).
    pub fn wait_for(&self, partition: i32, shutdown: &CancellationToken) {
        let Ok(mut jobs) = self.jobs.lock() else { return };
        while jobs.contains_key(&partition) && !shutdown.is_cancelled() {
            match self.changed.wait_timeout(jobs, Duration::from_millis(100)) {
                Ok((guard, _)) => jobs = guard,
                Err(_) => return,
            }
        }
    }
}

/// The consumer's side: closes batches into jobs and hands them to the writer lanes.
pub struct FlushQueue {
    lanes: Vec<Lane>,
    lane_of: PartitionLanes,
    completed: mpsc::UnboundedReceiver<Vec<(i32, u64)>>,
    in_flight: Arc<InFlight>,
    dead_letters: Vec<DeadLetter>,
    dead_letter_max_payload_bytes: usize,
    ownership: Arc<Ownership>,
    worker_id: String,
    telemetry: Arc<Telemetry>,
}

/// One writer lane, as the consumer sees it.
struct Lane {
    jobs: mpsc::Sender<FlushJob>,
    writer: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Which lane writes each partition held: the same one for as long as it is held (so that its
/// flushes are written one after another), chosen at first use as the lane with the fewest.
#[derive(Debug)]
struct PartitionLanes {
    lane_of: HashMap<i32, usize>,
    /// Partitions per lane.
    held: Vec<usize>,
}

impl PartitionLanes {
    fn new(lanes: usize) -> PartitionLanes {
        PartitionLanes { lane_of: HashMap::new(), held: vec![0; lanes.max(1)] }
    }

    fn lane(&mut self, partition: i32) -> usize {
        let held = &mut self.held;
        *self.lane_of.entry(partition).or_insert_with(|| {
            let lane = (0..held.len()).min_by_key(|&lane| held[lane]).unwrap_or(0);
            held[lane] += 1;
            lane
        })
    }

    /// Frees the lane of a partition no job holds any more.
    fn forget(&mut self, partition: i32) {
        if let Some(lane) = self.lane_of.remove(&partition) {
            self.held[lane] -= 1;
        }
    }
}

impl FlushQueue {
    /// Starts the writer lanes.
    pub fn start(
        sink: LedgerSink,
        dead_letter_producer: RecordProducer,
        config: &Config,
        telemetry: Arc<Telemetry>,
        partitions: (Arc<InFlight>, Arc<Ownership>),
        shutdown: CancellationToken,
    ) -> FlushQueue {
        let (in_flight, ownership) = partitions;
        let (completed_sender, completed) = mpsc::unbounded_channel();
        let failing_lanes = Arc::new(AtomicUsize::new(0));
        let lane_count = config.clickhouse.insert_streams.max(1);
        let worker_id = worker_id();
        let lanes = (0..lane_count)
            .map(|lane| {
                let (jobs, receiver) = mpsc::channel(1);
                let writer = FlushWriter {
                    lane,
                    sink: sink.clone(),
                    dead_letter_producer: dead_letter_producer.clone(),
                    dead_letter_topic: config.kafka.dead_letter_topic.clone(),
                    topic: config.kafka.topic.clone(),
                    worker_id: worker_id.clone(),
                    flush_seq: 0,
                    failing: false,
                    failing_lanes: failing_lanes.clone(),
                    telemetry: telemetry.clone(),
                    shutdown: shutdown.clone(),
                    in_flight: in_flight.clone(),
                    ownership: ownership.clone(),
                    completed: completed_sender.clone(),
                };
                Lane { jobs, writer: tokio::spawn(writer.run(receiver)) }
            })
            .collect();
        FlushQueue {
            lanes,
            lane_of: PartitionLanes::new(lane_count),
            completed,
            in_flight,
            dead_letters: Vec::new(),
            dead_letter_max_payload_bytes: config.kafka.dead_letter_max_payload_bytes,
            ownership,
            worker_id,
            telemetry,
        }
    }

    /// Queues a rejected record for the dead-letter topic.
    pub fn dead_letter(
        &mut self,
        partition: i32,
        offset: u64,
        payload: &[u8],
        reason_code: &'static str,
        reason: String,
    ) {
        self.telemetry.metrics.events_rejected.with_label_values(&[reason_code]).inc();
        let kept = &payload[..payload.len().min(self.dead_letter_max_payload_bytes)];
        self.dead_letters.push(DeadLetter {
            partition,
            offset,
            payload: kept.to_vec(),
            payload_bytes: payload.len(),
            reason_code,
            reason,
        });
    }

    /// Drops what was queued for a partition that moved away (its next owner redoes it). No job
    /// holds it any more (a revoke waits for that), so it can write through another lane if it
    /// comes back.
    pub fn forget(&mut self, partition: i32) {
        self.dead_letters.retain(|d| d.partition != partition);
        self.lane_of.forget(partition);
    }

    /// Closes every ready batch into a job per lane and hands them over. With
    /// [`Handover::IfRoom`] a lane that is a job behind is skipped: its partitions keep their
    /// open batches (the worker pauses fetching once too much is pending). A partition
    /// completing an unfinished flush is ready only once its batch reaches that flush's end,
    /// and its row goes only to the tables that lack it.
    pub async fn flush(
        &mut self,
        topic: &str,
        partitions: &mut HashMap<i32, PartitionCounter>,
        unfinished: &mut HashMap<i32, UnfinishedFlush>,
        handover: Handover,
    ) -> anyhow::Result<()> {
        let flushed_at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or_default();
        let mut rows: Vec<Vec<LedgerRow>> = self.lanes.iter().map(|_| Vec::new()).collect();
        let mut epochs: Vec<HashMap<i32, u64>> = self.lanes.iter().map(|_| HashMap::new()).collect();
        for (&partition, counter) in partitions.iter_mut() {
            let completing = unfinished.get(&partition).copied();
            if counter.pending_records() == 0 || completing.is_some_and(|f| counter.next_offset() < f.next_offset) {
                continue;
            }
            let lane = self.lane_of.lane(partition);
            // Only this task sends to a lane, so room seen here is still there at the send.
            if handover == Handover::IfRoom && self.lanes[lane].jobs.capacity() == 0 {
                continue;
            }
            let Some(epoch) = self.ownership.epoch(partition) else {
                continue; // Revoked inside the last poll; the worker drops its counter next.
            };
            let mut row =
                LedgerRow::from_batch(counter.take_batch(), topic, partition as u32, &self.worker_id, flushed_at);
            if let Some(flush) = completing {
                row.targets = Targets::ALL.without(flush.holding);
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
            let (dead_letters, kept) =
                std::mem::take(&mut self.dead_letters).into_iter().partition(|d| flushed.contains(&d.partition));
            self.dead_letters = kept;
            self.in_flight.add(flushed.iter().copied());
            if self.lanes[lane].jobs.send(FlushJob { rows, epochs, dead_letters, commits }).await.is_err() {
                self.in_flight.remove(flushed.into_iter());
                return self.writer_failure(lane).await;
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
    pub async fn finish(mut self) -> anyhow::Result<Vec<(i32, u64)>> {
        let writers: Vec<_> = self.lanes.drain(..).map(|lane| lane.writer).collect();
        for writer in writers {
            writer.await.context("flush writer task")??;
        }
        let mut out = Vec::new();
        while let Ok(commits) = self.completed.try_recv() {
            out.extend(commits);
        }
        Ok(out)
    }

    async fn writer_failure(&mut self, lane: usize) -> anyhow::Result<()> {
        match (&mut self.lanes[lane].writer).await {
            Ok(Ok(())) => bail!("the flush writer stopped"),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(e).context("flush writer task"),
        }
    }
}

/// A writer lane's task: writes its jobs in order, each exactly once.
struct FlushWriter {
    lane: usize,
    sink: LedgerSink,
    dead_letter_producer: RecordProducer,
    dead_letter_topic: String,
    topic: String,
    worker_id: String,
    flush_seq: u64,
    /// Whether this lane's last insert failed.
    failing: bool,
    /// Lanes whose last insert failed: `/readyz` is ready when none.
    failing_lanes: Arc<AtomicUsize>,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
    in_flight: Arc<InFlight>,
    ownership: Arc<Ownership>,
    completed: mpsc::UnboundedSender<Vec<(i32, u64)>>,
}

impl FlushWriter {
    async fn run(mut self, mut jobs: mpsc::Receiver<FlushJob>) -> anyhow::Result<()> {
        while let Some(job) = jobs.recv().await {
            let started = Instant::now();
            let partitions: Vec<i32> = job.commits.iter().map(|&(p, _)| p).collect();
            let FlushJob { rows, epochs, dead_letters, commits } = job;
            let written = async {
                self.deliver_dead_letters(dead_letters, &epochs).await?;
                self.write_once(rows, &epochs).await
            }
            .await;
            self.in_flight.remove(partitions.into_iter());
            let fenced = written?;
            let metrics = &self.telemetry.metrics;
            metrics.flushes.inc();
            metrics.flush_seconds.observe(started.elapsed().as_secs_f64());
            let commits: Vec<(i32, u64)> = commits.into_iter().filter(|(p, _)| !fenced.contains(p)).collect();
            for &(partition, next_offset) in &commits {
                metrics.partition_next_offset.with_label_values(&[&partition.to_string()]).set(next_offset as i64);
            }
            let _ = self.completed.send(commits);
        }
        Ok(())
    }

    /// Whether this worker still owns `partition` under the epoch its flush was counted in.
    fn owns(&self, epochs: &HashMap<i32, u64>, partition: i32) -> bool {
        epochs.get(&partition).is_some_and(|&epoch| self.ownership.holds(partition, epoch))
    }

    /// Drops the rows of partitions this worker no longer owns (noting them in `fenced`):
    /// their next owner replays them.
    fn drop_fenced(&self, rows: &mut Vec<LedgerRow>, epochs: &HashMap<i32, u64>, fenced: &mut Vec<i32>) {
        rows.retain(|row| {
            let partition = row.kafka_partition as i32;
            let owned = self.owns(epochs, partition);
            if !owned {
                fenced.push(partition);
                self.telemetry.metrics.fenced_flushes.inc();
                warn!(
                    partition,
                    first_offset = row.first_offset,
                    next_offset = row.next_offset,
                    "partition lost before its flush was written; dropped (its next owner replays it)"
                );
            }
            owned
        });
    }

    /// Writes one job's rows as one insert, retried and settled until every table holds them,
    /// as long as their partitions stay ours. Returns the partitions whose rows were dropped
    /// instead (fenced).
    async fn write_once(&mut self, mut rows: Vec<LedgerRow>, epochs: &HashMap<i32, u64>) -> anyhow::Result<Vec<i32>> {
        self.flush_seq += 1;
        let mut fenced = Vec::new();
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0u32;
        let mut unsure: Option<String> = None;
        loop {
            self.drop_fenced(&mut rows, epochs, &mut fenced);
            if let Some(query_id) = unsure.take() {
                let settled = if rows.is_empty() {
                    // Nothing of ours left to write; still stop the failed insert if it can be reached.
                    self.sink.cancel(&query_id).await.map_err(anyhow::Error::from)
                } else {
                    self.settle(&query_id, &mut rows, &mut fenced).await
                };
                if let Err(e) = settled {
                    warn!(error = format!("{e:#}"), "ClickHouse still unavailable");
                    if !rows.is_empty() {
                        unsure = Some(query_id);
                    }
                    self.pause(&mut backoff, CLICKHOUSE_STUCK).await?;
                    continue;
                }
            }
            if rows.is_empty() {
                break;
            }
            attempt += 1;
            let query_id = format!("{}-{}-{}-{}", self.worker_id, self.lane, self.flush_seq, attempt);
            let insert_started = Instant::now();
            let written = self.sink.write(&rows, &query_id).await;
            self.telemetry.metrics.insert_seconds.observe(insert_started.elapsed().as_secs_f64());
            match written {
                Ok(()) => break,
                Err(e) => {
                    self.telemetry.metrics.sink_errors.inc();
                    self.set_failing(true);
                    warn!(error = %e, attempt, lane = self.lane, rows = rows.len(), "flush insert failed; will retry");
                    unsure = Some(query_id);
                    self.pause(&mut backoff, CLICKHOUSE_STUCK).await?;
                }
            }
        }
        self.set_failing(false);
        Ok(fenced)
    }

    /// Notes whether this lane's flush is stuck (its insert or its dead letters fail); the
    /// worker is ready while no lane's is.
    fn set_failing(&mut self, failing: bool) {
        if failing != self.failing {
            self.failing = failing;
            if failing {
                self.failing_lanes.fetch_add(1, Ordering::SeqCst);
            } else {
                self.failing_lanes.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.telemetry.ready.store(self.failing_lanes.load(Ordering::SeqCst) == 0, Ordering::SeqCst);
    }

    /// After a failed insert: make sure it cannot land later, then find, table by table, what
    /// it did write, so that the retry writes each table exactly once. A row whose partition's
    /// recorded progress moved past its first offset without it was overtaken by another
    /// writer of the partition (a new owner that replayed it): it is dropped, never retried.
    async fn settle(&self, query_id: &str, rows: &mut Vec<LedgerRow>, fenced: &mut Vec<i32>) -> anyhow::Result<()> {
        self.sink.cancel(query_id).await?;
        let progress = self.sink.progress(&self.topic).await?;
        for row in rows.iter_mut() {
            let landed = self.sink.landed(row).await?;
            let overtaken = !landed.contains(Targets::PROGRESS)
                && progress.get(&row.kafka_partition).is_some_and(|p| p.next_offset > row.first_offset);
            if overtaken {
                self.telemetry.metrics.fenced_flushes.inc();
                error!(
                    partition = row.kafka_partition,
                    first_offset = row.first_offset,
                    next_offset = row.next_offset,
                    "another writer advanced this partition past the failed flush; dropped, not retried"
                );
                row.targets = Targets::NONE;
                fenced.push(row.kafka_partition as i32);
                continue;
            }
            let remaining = row.targets.without(landed);
            if remaining != row.targets {
                warn!(
                    partition = row.kafka_partition,
                    next_offset = row.next_offset,
                    landed = landed.bits(),
                    "the failed flush reached some tables; the retry writes only the others"
                );
            }
            row.targets = remaining;
        }
        rows.retain(|row| row.targets != Targets::NONE);
        Ok(())
    }

    /// Waits out one backoff step before retrying what `stuck` names; fails on shutdown.
    async fn pause(&self, backoff: &mut Duration, stuck: &str) -> anyhow::Result<()> {
        tokio::select! {
            _ = self.shutdown.cancelled() => {
                bail!("shutdown while {stuck}; nothing is lost: the unwritten records are not committed and are read again on restart")
            }
            _ = tokio::time::sleep(jittered(*backoff)) => {}
        }
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }

    /// Publishes a job's dead letters before its rows are written. A letter the broker can
    /// never take (see [`is_permanent`]) is given up, counted and logged: its record stays in
    /// `rejected_events` with the reason, and in the source topic. Other failures are retried;
    /// meanwhile the lane reports the flush as stuck (`/readyz`).
    async fn deliver_dead_letters(
        &mut self,
        mut dead_letters: Vec<DeadLetter>,
        epochs: &HashMap<i32, u64>,
    ) -> anyhow::Result<()> {
        let mut backoff = Duration::from_millis(100);
        loop {
            // A lost partition's next owner publishes its dead letters again.
            dead_letters.retain(|letter| self.owns(epochs, letter.partition));
            if dead_letters.is_empty() {
                break;
            }
            let mut failed = Vec::new();
            let mut deliveries = Vec::new();
            for letter in dead_letters.drain(..) {
                match self.enqueue_dead_letter(&letter).await {
                    Ok(delivery) => deliveries.push((delivery, letter)),
                    Err(e) => self.dead_letter_failed(letter, &e, &mut failed),
                }
            }
            for (delivery, letter) in deliveries {
                match delivered(delivery).await {
                    Ok(_) => {
                        self.telemetry.metrics.dead_letters.inc();
                        if letter.truncated() {
                            self.telemetry.metrics.dead_letters_truncated.inc();
                        }
                    }
                    Err(e) => self.dead_letter_failed(letter, &e, &mut failed),
                }
            }
            dead_letters = failed;
            if !dead_letters.is_empty() {
                self.set_failing(true);
                self.pause(&mut backoff, "the dead-letter topic was refusing a flush's rejected records").await?;
            }
        }
        Ok(())
    }

    async fn enqueue_dead_letter(&self, letter: &DeadLetter) -> Result<DeliveryFuture, KafkaError> {
        let offset = letter.offset.to_string();
        let partition = letter.partition.to_string();
        let payload_bytes = letter.payload_bytes.to_string();
        let mut headers: Vec<(&str, &[u8])> = vec![
            ("costline-reason-code", letter.reason_code.as_bytes()),
            ("costline-reason", letter.reason.as_bytes()),
            ("costline-source-topic", self.topic.as_bytes()),
            ("costline-source-partition", partition.as_bytes()),
            ("costline-source-offset", offset.as_bytes()),
            ("costline-payload-bytes", payload_bytes.as_bytes()),
        ];
        if letter.truncated() {
            headers.push(("costline-payload-truncated", b"true"));
        }
        self.dead_letter_producer.enqueue(&self.dead_letter_topic, None, &letter.payload, None, &headers).await
    }

    /// Sorts a failed dead letter: given up when no retry can succeed, else kept for the next try.
    fn dead_letter_failed(&self, letter: DeadLetter, error: &KafkaError, retry: &mut Vec<DeadLetter>) {
        let metrics = &self.telemetry.metrics;
        if is_permanent(error) {
            metrics.dead_letters_undeliverable.inc();
            error!(
                error = %error,
                partition = letter.partition,
                offset = letter.offset,
                payload_bytes = letter.payload_bytes,
                reason_code = letter.reason_code,
                "the dead-letter topic can never take this rejected record; it stays in rejected_events and the source topic"
            );
        } else {
            metrics.dead_letter_retries.inc();
            warn!(error = %error, partition = letter.partition, offset = letter.offset, "dead-letter delivery failed; will retry");
            retry.push(letter);
        }
    }
}

/// ±25 % so that workers that failed together do not retry together.
fn jittered(base: Duration) -> Duration {
    let factor = 0.75 + rand::random::<f64>() * 0.5;
    base.mul_f64(factor)
}

/// `host-pid`: names the worker in `flushes.worker` and in query ids.
fn worker_id() -> String {
    let host = costline_clickhouse::host_name().unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::PartitionLanes;

    #[test]
    fn partitions_keep_their_lane_and_spread_over_the_lanes() {
        let mut lanes = PartitionLanes::new(2);
        let first: Vec<usize> = [0, 1, 2, 3].into_iter().map(|p| lanes.lane(p)).collect();
        assert_eq!(first, [0, 1, 0, 1]);
        assert_eq!([3, 2, 1, 0].map(|p| lanes.lane(p)), [1, 0, 1, 0], "a held partition keeps its lane");
        // Partitions 0 and 2 move away: the next ones go to the lane they freed.
        lanes.forget(0);
        lanes.forget(2);
        lanes.forget(2);
        assert_eq!([7, 5].map(|p| lanes.lane(p)), [0, 0]);
        assert_eq!(lanes.lane(9), 0, "ties go to the first lane");
        assert_eq!(lanes.lane(11), 1);
    }

    #[test]
    fn no_lanes_configured_means_one() {
        let mut lanes = PartitionLanes::new(0);
        assert_eq!([4, 5].map(|p| lanes.lane(p)), [0, 0]);
    }
}
