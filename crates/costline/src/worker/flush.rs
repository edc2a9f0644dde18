//! Writing one flush, exactly once.
//!
//! Order: dead letters are delivered to Kafka first (so a rejected record is never only in
//! ClickHouse), then every partition's batch goes out as one ledger row in one `INSERT`. Only
//! then are offsets committed.
//!
//! When an insert fails, the worker cannot know what ClickHouse applied: a timeout or a dropped
//! connection can hide a success, and a server failing half-way through the fan-out (seen when
//! ClickHouse shuts down during an insert) leaves some tables written and others not. Before
//! writing again the worker kills that query on the server (`KILL QUERY … SYNC`, so it cannot
//! land later), asks each table whether it holds the flush, and retries the row with only the
//! missing tables in its `targets`. Each table thus receives each flush once; a failed flush
//! is retried with exponential backoff for as long as it takes, and while it retries nothing
//! is consumed (back-pressure) and `/readyz` reports the outage.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use costline_clickhouse::{LedgerRow, LedgerSink, Targets};
use costline_core::PartitionCounter;
use costline_kafka::RecordProducer;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::Config;
use crate::http::Health;
use crate::worker::partitions::UnfinishedFlush;

/// A rejected record on its way to the dead-letter topic.
struct DeadLetter {
    partition: i32,
    offset: u64,
    payload: Vec<u8>,
    reason_code: &'static str,
    reason: String,
}

pub struct Flusher {
    sink: LedgerSink,
    dead_letter_producer: RecordProducer,
    dead_letter_topic: String,
    dead_letters: Vec<DeadLetter>,
    worker_id: String,
    flush_seq: u64,
    health: Arc<Health>,
    shutdown: CancellationToken,
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Flusher {
    pub fn new(
        sink: LedgerSink,
        dead_letter_producer: RecordProducer,
        config: &Config,
        health: Arc<Health>,
        shutdown: CancellationToken,
    ) -> Self {
        Flusher {
            sink,
            dead_letter_producer,
            dead_letter_topic: config.kafka.dead_letter_topic.clone(),
            dead_letters: Vec::new(),
            worker_id: worker_id(),
            flush_seq: 0,
            health,
            shutdown,
        }
    }

    pub fn sink(&self) -> LedgerSink {
        self.sink.clone()
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
        self.health.metrics.events_rejected.with_label_values(&[reason_code]).inc();
        self.dead_letters.push(DeadLetter { partition, offset, payload: payload.to_vec(), reason_code, reason });
    }

    /// Drops what was queued for a partition that moved away (its next owner redoes it).
    pub fn forget(&mut self, partition: i32) {
        self.dead_letters.retain(|d| d.partition != partition);
    }

    /// Writes every pending batch. A partition completing an unfinished flush is written only
    /// once its batch reaches that flush's end, and only to the tables that lack it. Returns
    /// `(partition, next_offset)` to commit.
    pub async fn flush(
        &mut self,
        topic: &str,
        partitions: &mut HashMap<i32, PartitionCounter>,
        unfinished: &mut HashMap<i32, UnfinishedFlush>,
    ) -> anyhow::Result<Vec<(i32, u64)>> {
        let ready = |partition: &i32, counter: &PartitionCounter| {
            counter.pending_records() > 0
                && unfinished.get(partition).is_none_or(|f| counter.next_offset() >= f.next_offset)
        };
        if !partitions.iter().any(|(p, c)| ready(p, c)) {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        self.deliver_dead_letters(topic).await?;
        let flushed_at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or_default();
        let mut rows = Vec::new();
        for (&partition, counter) in partitions.iter_mut() {
            if !ready(&partition, counter) {
                continue;
            }
            let mut row =
                LedgerRow::from_batch(counter.take_batch(), topic, partition as u32, &self.worker_id, flushed_at);
            if let Some(flush) = unfinished.get(&partition) {
                row.targets = Targets::ALL.without(flush.holding).0;
            }
            rows.push(row);
        }
        let commits: Vec<(i32, u64)> = rows.iter().map(|r| (r.kafka_partition as i32, r.next_offset)).collect();
        self.write_once(rows).await?;
        for (partition, _) in &commits {
            unfinished.remove(partition);
        }
        let metrics = &self.health.metrics;
        metrics.flushes.inc();
        metrics.flush_seconds.observe(started.elapsed().as_secs_f64());
        for &(partition, next_offset) in &commits {
            metrics.partition_next_offset.with_label_values(&[&partition.to_string()]).set(next_offset as i64);
        }
        Ok(commits)
    }

    async fn write_once(&mut self, mut rows: Vec<LedgerRow>) -> anyhow::Result<()> {
        self.flush_seq += 1;
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0u32;
        let mut unsure: Option<String> = None;
        loop {
            if let Some(query_id) = unsure.take() {
                if let Err(e) = self.settle(&query_id, &mut rows).await {
                    warn!(error = format!("{e:#}"), "ClickHouse still unavailable");
                    unsure = Some(query_id);
                    self.pause(&mut backoff).await?;
                    continue;
                }
            }
            if rows.is_empty() {
                break;
            }
            attempt += 1;
            let query_id = format!("{}-{}-{}", self.worker_id, self.flush_seq, attempt);
            match self.sink.write(&rows, &query_id).await {
                Ok(()) => break,
                Err(e) => {
                    self.health.metrics.sink_errors.inc();
                    self.health.ready.store(false, Ordering::Relaxed);
                    warn!(error = %e, attempt, rows = rows.len(), "flush insert failed; will retry");
                    unsure = Some(query_id);
                    self.pause(&mut backoff).await?;
                }
            }
        }
        self.health.ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// After a failed insert: make sure it cannot land later, then find, table by table, what
    /// it did write, so that the retry writes each table exactly once.
    async fn settle(&self, query_id: &str, rows: &mut Vec<LedgerRow>) -> anyhow::Result<()> {
        self.sink.cancel(query_id).await?;
        for row in rows.iter_mut() {
            let landed = self.sink.landed(row).await?;
            let remaining = row.targets().without(landed);
            if remaining != row.targets() {
                warn!(
                    partition = row.kafka_partition,
                    next_offset = row.next_offset,
                    landed = landed.0,
                    "the failed flush reached some tables; the retry writes only the others"
                );
            }
            row.targets = remaining.0;
        }
        rows.retain(|row| row.targets != Targets::NONE.0);
        Ok(())
    }

    async fn pause(&self, backoff: &mut Duration) -> anyhow::Result<()> {
        tokio::select! {
            _ = self.shutdown.cancelled() => {
                bail!("shutdown while ClickHouse was refusing a flush; nothing is lost: the unwritten records are not committed and are read again on restart")
            }
            _ = tokio::time::sleep(jittered(*backoff)) => {}
        }
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }

    async fn deliver_dead_letters(&mut self, topic: &str) -> anyhow::Result<()> {
        let mut backoff = Duration::from_millis(100);
        while !self.dead_letters.is_empty() {
            let mut failed = Vec::new();
            let mut deliveries = Vec::new();
            for letter in self.dead_letters.drain(..) {
                let offset = letter.offset.to_string();
                let partition = letter.partition.to_string();
                let headers: [(&str, &[u8]); 5] = [
                    ("costline-reason-code", letter.reason_code.as_bytes()),
                    ("costline-reason", letter.reason.as_bytes()),
                    ("costline-source-topic", topic.as_bytes()),
                    ("costline-source-partition", partition.as_bytes()),
                    ("costline-source-offset", offset.as_bytes()),
                ];
                match self
                    .dead_letter_producer
                    .enqueue(&self.dead_letter_topic, None, &letter.payload, None, &headers)
                    .await
                {
                    Ok(delivery) => deliveries.push((delivery, letter)),
                    Err(e) => {
                        warn!(error = %e, "dead-letter enqueue failed");
                        failed.push(letter);
                    }
                }
            }
            for (delivery, letter) in deliveries {
                match delivery.await {
                    Ok(Ok(_)) => self.health.metrics.dead_letters.inc(),
                    Ok(Err((e, _))) => {
                        warn!(error = %e, "dead-letter delivery failed");
                        failed.push(letter);
                    }
                    Err(_) => failed.push(letter),
                }
            }
            self.dead_letters = failed;
            if !self.dead_letters.is_empty() {
                self.pause(&mut backoff).await?;
            }
        }
        Ok(())
    }
}

/// ±25 % so that workers that failed together do not retry together.
fn jittered(base: Duration) -> Duration {
    let factor = 0.75 + rand::random::<f64>() * 0.5;
    base.mul_f64(factor)
}

/// `host-pid`: names the worker in `flushes.worker` and in query ids.
fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}
