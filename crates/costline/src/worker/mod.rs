//! The worker: Kafka records in, ClickHouse flushes out, offsets committed after.
//!
//! ```text
//!  KafkaSource ──record──▶ PartitionCounter (per partition: decode, dedup, price, rollup)
//!       ▲                          │ every flush_interval or max_pending_records
//!       │ commit (after)           ▼
//!       └────────────────── flush, per writer lane: dead letters delivered → one INSERT of ledger rows
//! ```
//!
//! One task reads, counts and hands batches to the writer lanes (`flush`); a rebalance runs
//! inside `recv`, and a revoked partition is let go only once no flush of it is in flight.
//! Shutdown (SIGTERM/SIGINT) stops reading, flushes, commits and returns.

mod flush;
mod ownership;
mod partitions;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use costline_clickhouse::{ClickHouseTarget, LedgerSink};
use costline_core::{Outcome, PartitionCounter, PriceTable, RecordMeta};
use costline_kafka::{KafkaSource, RecordProducer, SourceSettings};
use rdkafka::message::{Message, Timestamp};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::http::Telemetry;
use flush::{FlushQueue, Handover, InFlight};
use ownership::Ownership;
use partitions::{PartitionChange, PartitionChanges, UnfinishedFlush};

/// Sets whether the kernel may back this process's memory with transparent huge pages
/// (`pipeline.transparent_huge_pages`). A failure costs only speed, so it is logged, not fatal.
fn set_transparent_huge_pages(enabled: bool) {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(!enabled) {
        warn!(error = %e, enabled, "cannot set whether transparent huge pages back this process");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = enabled;
}

/// Runs a worker until `shutdown` is cancelled. `evaluator` is set while this worker owns
/// partition 0 (it then evaluates budgets and rules).
pub async fn run(
    config: &Config,
    prices: PriceTable,
    telemetry: Arc<Telemetry>,
    evaluator: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    set_transparent_huge_pages(config.pipeline.transparent_huge_pages);
    let target = clickhouse_target(config);
    let applied = costline_clickhouse::migrate::apply(&target).await.context("applying ClickHouse migrations")?;
    info!(steps_applied = applied.len(), database = %target.database, "schema is up to date");
    let sink = LedgerSink::new(&target, Duration::from_secs(config.clickhouse.insert_timeout_secs));
    let dead_letters = RecordProducer::connect(&config.kafka.brokers, &config.kafka.producer_properties())
        .context("creating the dead-letter producer")?;
    let in_flight = Arc::new(InFlight::default());
    // The consumer is made after the ownership it reports to; a weak link avoids a cycle.
    let consumer: Arc<OnceLock<Weak<KafkaSource<PartitionChanges>>>> = Arc::new(OnceLock::new());
    let probe = consumer.clone();
    let ownership = Arc::new(Ownership::new(Arc::new(move || {
        probe.get().and_then(Weak::upgrade).is_some_and(|source| source.assignment_lost())
    })));
    let changes = Arc::new(PartitionChanges::new(
        sink.clone(),
        &config.pipeline,
        evaluator,
        (in_flight.clone(), ownership.clone()),
        telemetry.metrics.clone(),
        shutdown.clone(),
    ));
    let settings = SourceSettings {
        brokers: config.kafka.brokers.clone(),
        topic: config.kafka.topic.clone(),
        group_id: config.kafka.group_id.clone(),
        session_timeout_ms: config.kafka.session_timeout_ms,
        max_poll_interval_ms: config.kafka.max_poll_interval_ms,
        extra: config.kafka.client_properties(),
    };
    let source = Arc::new(KafkaSource::connect(&settings, changes.clone()).context("creating the Kafka consumer")?);
    let _ = consumer.set(Arc::downgrade(&source));
    telemetry.ready.store(true, Ordering::Relaxed);
    info!(topic = %settings.topic, group = %settings.group_id, "worker started");

    let mut worker = Worker {
        topic: config.kafka.topic.clone(),
        prices,
        partitions: HashMap::new(),
        unfinished: HashMap::new(),
        flush_now: false,
        pending: 0,
        flusher: FlushQueue::start(
            sink.clone(),
            dead_letters,
            config,
            telemetry.clone(),
            (in_flight, ownership),
            shutdown.clone(),
        ),
        fetching_paused: false,
        telemetry,
        max_pending: config.pipeline.max_pending_records,
        max_clock_skew_secs: config.pipeline.max_clock_skew_secs,
        record_time_bound_ms: record_time_bound_ms(config.pipeline.max_clock_skew_secs),
    };
    if config.clickhouse.retention_days > 0 {
        tokio::spawn(enforce_retention(sink, config.clickhouse.retention_days, shutdown.clone()));
    }
    let mut ticker = tokio::time::interval(Duration::from_millis(config.pipeline.flush_interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let received = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => None,
            received = source.recv() => Some(received),
        };
        worker.apply(changes.drain());
        match received {
            None => worker.flush(&source, Handover::IfRoom).await?,
            Some(Ok(message)) => {
                worker.count(&message);
                if worker.flush_now {
                    // The replay reached the end of a flush a previous owner left half-applied:
                    // its completion must be written before the partition counts one record
                    // more (its row goes only to the tables that lack that flush).
                    worker.flush(&source, Handover::Wait).await?;
                } else if worker.pending() >= worker.max_pending {
                    worker.flush(&source, Handover::IfRoom).await?;
                }
            }
            Some(Err(e)) => {
                worker.telemetry.metrics.consume_errors.inc();
                warn!(error = %e, "Kafka consumer error; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    info!("shutting down: flushing what is pending");
    worker.flush(&source, Handover::Wait).await?;
    let Worker { flusher, .. } = worker;
    let committed = flusher.finish().await?;
    if !committed.is_empty() {
        if let Err(e) = source.commit(&committed, rdkafka::consumer::CommitMode::Sync) {
            warn!(error = %e, "final offset commit failed (ClickHouse holds the progress; harmless)");
        }
    }
    info!("flushed; leaving the group");
    Ok(())
}

/// Drops expired `usage_events`/`rejected_events` partitions at start and every hour.
async fn enforce_retention(sink: LedgerSink, retention_days: u32, shutdown: CancellationToken) {
    let mut hourly = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hourly.tick() => {}
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let keep_from = now.saturating_sub(u64::from(retention_days) * 86_400) as u32;
        match sink.drop_expired(keep_from).await {
            Ok(dropped) if !dropped.is_empty() => {
                info!(?dropped, "retention: dropped expired partitions")
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "retention: could not drop expired partitions"),
        }
    }
}

/// The latest Kafka record time believed now: the wall clock plus `max_clock_skew_secs`.
///
/// Record times are set by producers (CreateTime) and age the dedup memory; bounding them
/// keeps one record dated in the future from making every remembered identity look expired.
/// With `LogAppendTime` topics the broker sets them and this bound only guards against the
/// broker's clock.
pub(crate) fn record_time_bound_ms(max_clock_skew_secs: u32) -> i64 {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    now_ms + i64::from(max_clock_skew_secs) * 1000
}

pub fn clickhouse_target(config: &Config) -> ClickHouseTarget {
    ClickHouseTarget {
        url: config.clickhouse.url.clone(),
        database: config.clickhouse.database.clone(),
        user: config.clickhouse.user.clone(),
        password: config.clickhouse.password.as_ref().map(|s| s.expose().to_string()),
    }
}

struct Worker {
    topic: String,
    prices: PriceTable,
    partitions: HashMap<i32, PartitionCounter>,
    /// Partitions whose first batch must complete a previous owner's half-applied flush.
    unfinished: HashMap<i32, UnfinishedFlush>,
    /// Set when a partition reached the end of its unfinished flush: write it now.
    flush_now: bool,
    /// Records counted but not yet handed to the writer.
    pending: u64,
    /// Whether fetching is paused because `max_pending` records wait for a writer lane.
    fetching_paused: bool,
    flusher: FlushQueue,
    telemetry: Arc<Telemetry>,
    max_pending: u64,
    max_clock_skew_secs: u32,
    /// [`record_time_bound_ms`], refreshed for every counter at every flush (at least every
    /// flush interval).
    record_time_bound_ms: i64,
}

impl Worker {
    fn apply(&mut self, changes: Vec<PartitionChange>) {
        for change in changes {
            match change {
                PartitionChange::Assigned { partition, mut counter, unfinished } => {
                    counter.bound_record_times(self.record_time_bound_ms);
                    self.partitions.insert(partition, *counter);
                    match unfinished {
                        Some(flush) => self.unfinished.insert(partition, flush),
                        None => self.unfinished.remove(&partition),
                    };
                }
                // Unflushed records of a revoked partition are dropped: they were not
                // committed, and the partition's next owner reads them again from ClickHouse's
                // progress on.
                PartitionChange::Revoked { partition } => {
                    self.unfinished.remove(&partition);
                    if let Some(counter) = self.partitions.remove(&partition) {
                        self.flusher.forget(partition);
                        info!(partition, dropped = counter.pending_records(), "partition revoked");
                    }
                }
            }
        }
        self.telemetry.metrics.assigned_partitions.set(self.partitions.len() as i64);
    }

    fn count(&mut self, message: &rdkafka::message::BorrowedMessage<'_>) {
        let metrics = &self.telemetry.metrics;
        metrics.records_consumed.inc();
        let partition = message.partition();
        let Some(counter) = self.partitions.get_mut(&partition) else {
            error!(partition, offset = message.offset(), "record of a partition without state: not counted here");
            return;
        };
        let offset = message.offset() as u64;
        if offset < counter.next_offset() {
            return; // Already counted (before a seek took effect).
        }
        let timestamp_ms = match message.timestamp() {
            Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => ms,
            Timestamp::NotAvailable => 0,
        };
        let payload = message.payload().unwrap_or_default();
        match counter.count(RecordMeta { offset, timestamp_ms }, message.key(), payload, &self.prices) {
            Outcome::Counted => metrics.events_counted.inc(),
            Outcome::Duplicate => metrics.events_duplicate.inc(),
            Outcome::Rejected => {
                if let Some(rejected) = counter.last_rejected() {
                    let reason = &rejected.reason;
                    self.flusher.dead_letter(partition, offset, payload, reason.code(), reason.to_string());
                }
            }
        }
        self.pending += 1;
        metrics.pending_records.set(self.pending as i64);
        if let Some(flush) = self.unfinished.get(&partition) {
            if counter.next_offset() >= flush.next_offset {
                if counter.next_offset() > flush.next_offset {
                    error!(
                        partition,
                        expected = flush.next_offset,
                        at = counter.next_offset(),
                        "replay passed the end of an unfinished flush"
                    );
                }
                self.flush_now = true;
            }
        }
    }

    fn pending(&self) -> u64 {
        self.pending
    }

    /// Hands ready batches to the writer lanes, commits what they wrote, and pauses fetching
    /// while too much waits for a lane (resuming once it is written): the loop keeps polling
    /// either way, so the group never drops this worker for being stuck behind ClickHouse.
    async fn flush(&mut self, source: &KafkaSource<PartitionChanges>, handover: Handover) -> anyhow::Result<()> {
        self.flush_now = false;
        self.record_time_bound_ms = record_time_bound_ms(self.max_clock_skew_secs);
        for counter in self.partitions.values_mut() {
            counter.bound_record_times(self.record_time_bound_ms);
        }
        self.flusher.flush(&self.topic, &mut self.partitions, &mut self.unfinished, handover).await?;
        let committed = self.flusher.completed();
        if !committed.is_empty() {
            if let Err(e) = source.commit(&committed, rdkafka::consumer::CommitMode::Async) {
                warn!(error = %e, "offset commit failed (ClickHouse holds the progress; harmless)");
            }
        }
        let metrics = &self.telemetry.metrics;
        self.pending = self.partitions.values().map(PartitionCounter::pending_records).sum();
        metrics.pending_records.set(self.pending as i64);
        let held_back = self.pending >= self.max_pending;
        if held_back || self.fetching_paused {
            let partitions: Vec<i32> = self.partitions.keys().copied().collect();
            let switched = if held_back { source.pause(&partitions) } else { source.resume(&partitions) };
            match switched {
                Ok(()) if held_back != self.fetching_paused => {
                    info!(pending = self.pending, paused = held_back, "fetching paused while the writer catches up")
                }
                Ok(()) => {}
                Err(e) => warn!(error = %e, paused = held_back, "cannot pause or resume fetching"),
            }
            self.fetching_paused = held_back;
        }
        metrics.window_keys.set(self.partitions.values().map(PartitionCounter::pending_keys).sum::<usize>() as i64);
        metrics.dedup_entries.set(self.partitions.values().map(|c| c.dedup().len()).sum::<usize>() as i64);
        metrics
            .dedup_memory_bytes
            .set(self.partitions.values().map(|c| c.dedup().memory_bytes()).sum::<usize>() as i64);
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn transparent_huge_pages_follow_the_config() {
        super::set_transparent_huge_pages(false);
        assert_eq!(nix::sys::prctl::get_thp_disable(), Ok(true));
        super::set_transparent_huge_pages(true);
        assert_eq!(nix::sys::prctl::get_thp_disable(), Ok(false));
    }
}
