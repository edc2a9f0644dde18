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
//!
//! This is wiring: writing each flush exactly once, taking partitions over and fencing are
//! `costline_progress`'s. Here they meet the Kafka source ([`lifecycle`]: the rebalance
//! callback), the dead-letter topic ([`dead_letters`]) and the metrics ([`flush_metrics`]).

mod dead_letters;
mod flush_metrics;
mod lifecycle;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use costline_clickhouse::{ClickHouseTarget, LedgerSink};
use costline_core::{Outcome, PartitionCounter, PriceTable};
use costline_kafka::{DeadLetter, GroupWatch, KafkaSource, RecordProducer, SourceRecord, SourceSettings};
use costline_progress::{
    record_time_bound_ms, DedupSettings, Fencing, FlushQueue, Handover, InFlight, LaneSettings, OwnedPartitions,
    Ownership, PartitionChange, PartitionChanges, Rebalance, Takeover,
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::http::Telemetry;
use dead_letters::KafkaDeadLetters;
use flush_metrics::FlushMetrics;
use lifecycle::WorkerLifecycle;

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

/// Runs a worker until `shutdown` is cancelled. `leadership` is true while this worker owns
/// partition 0 (it then evaluates budgets and rules).
pub async fn run(
    config: &Config,
    prices: PriceTable,
    telemetry: Arc<Telemetry>,
    leadership: tokio::sync::watch::Sender<bool>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    set_transparent_huge_pages(config.pipeline.transparent_huge_pages);
    let target = clickhouse_target(config);
    let applied = costline_clickhouse::migrate::apply(&target).await.context("applying ClickHouse migrations")?;
    info!(steps_applied = applied.len(), database = %target.database, "schema is up to date");
    let sink = LedgerSink::new(&target, Duration::from_secs(config.clickhouse.insert_timeout_secs));
    let producer = RecordProducer::connect(&config.kafka.brokers, &config.kafka.producer_properties())
        .context("creating the dead-letter producer")?;
    // The consumer is made after the ownership it reports to; a weak link avoids a cycle.
    let consumer: Arc<OnceLock<Weak<KafkaSource<WorkerLifecycle>>>> = Arc::new(OnceLock::new());
    let probe = consumer.clone();
    let fencing = Fencing {
        in_flight: Arc::new(InFlight::default()),
        ownership: Arc::new(Ownership::new(Arc::new(move || {
            probe.get().and_then(Weak::upgrade).is_some_and(|source| source.assignment_lost())
        }))),
    };
    let pipeline = &config.pipeline;
    let dedup = DedupSettings {
        horizon_secs: pipeline.dedup_horizon_secs,
        grace_secs: pipeline.dedup_grace_secs,
        max_clock_skew_secs: pipeline.max_clock_skew_secs,
    };
    let (rebalance, changes) = Rebalance::new(
        Takeover::new(sink.clone(), dedup),
        fencing.ownership.clone(),
        fencing.in_flight.clone(),
        shutdown.clone(),
    );
    let lifecycle = Arc::new(WorkerLifecycle {
        rebalance,
        leadership,
        metrics: telemetry.metrics.clone(),
        group: Mutex::new(GroupWatch::default()),
    });
    let settings = SourceSettings {
        brokers: config.kafka.brokers.clone(),
        topic: config.kafka.topic.clone(),
        group_id: config.kafka.group_id.clone(),
        session_timeout_ms: config.kafka.session_timeout_ms,
        max_poll_interval_ms: config.kafka.max_poll_interval_ms,
        extra: config.kafka.client_properties(),
    };
    let source = Arc::new(KafkaSource::connect(&settings, lifecycle).context("creating the Kafka consumer")?);
    let _ = consumer.set(Arc::downgrade(&source));
    telemetry.ready.store(true, Ordering::Relaxed);
    info!(topic = %settings.topic, group = %settings.group_id, "worker started");

    let dead_letters = KafkaDeadLetters {
        producer,
        topic: config.kafka.dead_letter_topic.clone(),
        source_topic: config.kafka.topic.clone(),
        metrics: telemetry.metrics.clone(),
    };
    let lanes = LaneSettings {
        lanes: config.clickhouse.insert_streams,
        topic: config.kafka.topic.clone(),
        worker_id: worker_id(),
    };
    let report = Arc::new(FlushMetrics { telemetry: telemetry.clone() });
    let mut worker = Worker {
        prices,
        partitions: OwnedPartitions::default(),
        changes,
        flush_now: false,
        pending: 0,
        flusher: FlushQueue::start(sink.clone(), dead_letters, report, lanes, fencing, shutdown.clone()),
        fetching_paused: false,
        telemetry,
        max_pending: pipeline.max_pending_records,
        max_clock_skew_secs: pipeline.max_clock_skew_secs,
        dead_letter_max_payload_bytes: config.kafka.dead_letter_max_payload_bytes,
        record_time_bound_ms: record_time_bound_ms(pipeline.max_clock_skew_secs),
    };
    if config.clickhouse.retention_days > 0 {
        tokio::spawn(enforce_retention(sink, config.clickhouse.retention_days, shutdown.clone()));
    }
    let mut ticker = tokio::time::interval(Duration::from_millis(pipeline.flush_interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let received = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => None,
            received = source.recv() => Some(received),
        };
        worker.apply_changes();
        match received {
            None => worker.flush(&source, Handover::IfRoom).await?,
            Some(Ok(record)) => {
                worker.count(&record);
                if worker.flush_now {
                    // The replay reached the end of a flush a previous owner left half-applied:
                    // its completion must be written before the partition counts one record
                    // more (its row goes only to the tables that lack that flush).
                    worker.flush(&source, Handover::Wait).await?;
                } else if worker.pending >= worker.max_pending {
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
        if let Err(e) = source.commit_and_wait(&committed) {
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
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
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

pub fn clickhouse_target(config: &Config) -> ClickHouseTarget {
    ClickHouseTarget {
        url: config.clickhouse.url.clone(),
        database: config.clickhouse.database.clone(),
        user: config.clickhouse.user.clone(),
        password: config.clickhouse.password.as_ref().map(|s| s.expose().to_string()),
        cluster: config
            .clickhouse
            .cluster
            .as_ref()
            .map(|name| costline_clickhouse::Cluster { name: name.clone(), shards: config.clickhouse.shards.clone() }),
    }
}

struct Worker {
    prices: PriceTable,
    partitions: OwnedPartitions,
    changes: PartitionChanges,
    /// Set when a partition reached the end of its unfinished flush: write it now.
    flush_now: bool,
    /// Records counted but not yet handed to the writer.
    pending: u64,
    /// Whether fetching is paused because `max_pending` records wait for a writer lane.
    fetching_paused: bool,
    flusher: FlushQueue<KafkaDeadLetters>,
    telemetry: Arc<Telemetry>,
    max_pending: u64,
    max_clock_skew_secs: u32,
    dead_letter_max_payload_bytes: usize,
    /// [`record_time_bound_ms`], refreshed for every counter at every flush (at least every
    /// flush interval).
    record_time_bound_ms: i64,
}

impl Worker {
    /// Takes in the partitions the last poll's rebalance assigned or revoked.
    fn apply_changes(&mut self) {
        let changes = self.changes.drain();
        if changes.is_empty() {
            return;
        }
        for change in changes {
            match change {
                PartitionChange::Assigned { partition, start } => {
                    self.partitions.assign(partition, *start, self.record_time_bound_ms);
                }
                PartitionChange::Revoked { partition } => {
                    if let Some(dropped) = self.partitions.revoke(partition) {
                        self.flusher.forget(partition);
                        info!(partition, dropped, "partition revoked");
                    }
                }
            }
        }
        self.telemetry.metrics.assigned_partitions.set(self.partitions.partitions().len() as i64);
    }

    fn count(&mut self, record: &SourceRecord<'_>) {
        let metrics = &self.telemetry.metrics;
        metrics.records_consumed.inc();
        let partition = record.partition();
        let meta = record.meta();
        let Some(counter) = self.partitions.counter_mut(partition) else {
            error!(partition, offset = meta.offset, "record of a partition without state: not counted here");
            return;
        };
        if meta.offset < counter.next_offset() {
            return; // Already counted (before a seek took effect).
        }
        match counter.count(meta, record.key(), record.payload(), &self.prices) {
            Outcome::Counted => metrics.events_counted.inc(),
            Outcome::Duplicate => metrics.events_duplicate.inc(),
            Outcome::Rejected(rejected) => {
                let reason = &rejected.reason;
                metrics.events_rejected.with_label_values(&[reason.code()]).inc();
                self.flusher.dead_letter(DeadLetter::new(
                    partition,
                    meta.offset,
                    record.payload(),
                    self.dead_letter_max_payload_bytes,
                    reason.code(),
                    reason.to_string(),
                ));
            }
        }
        self.pending += 1;
        metrics.pending_records.set(self.pending as i64);
        if self.partitions.completes_unfinished(partition) {
            metrics.unfinished_flushes.inc();
            self.flush_now = true;
        }
    }

    /// Hands ready batches to the writer lanes, commits what they wrote, and pauses fetching
    /// while too much waits for a lane (resuming once it is written): the loop keeps polling
    /// either way, so the group never drops this worker for being stuck behind ClickHouse.
    async fn flush(&mut self, source: &KafkaSource<WorkerLifecycle>, handover: Handover) -> anyhow::Result<()> {
        self.flush_now = false;
        self.record_time_bound_ms = record_time_bound_ms(self.max_clock_skew_secs);
        self.partitions.bound_record_times(self.record_time_bound_ms);
        self.flusher.flush(&mut self.partitions, handover).await?;
        let committed = self.flusher.completed();
        if !committed.is_empty() {
            if let Err(e) = source.commit(&committed) {
                warn!(error = %e, "offset commit failed (ClickHouse holds the progress; harmless)");
            }
        }
        let metrics = &self.telemetry.metrics;
        self.pending = self.partitions.counters().map(PartitionCounter::pending_records).sum();
        metrics.pending_records.set(self.pending as i64);
        let held_back = self.pending >= self.max_pending;
        if held_back || self.fetching_paused {
            let partitions = self.partitions.partitions();
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
        metrics.window_keys.set(self.partitions.counters().map(PartitionCounter::pending_keys).sum::<usize>() as i64);
        metrics.dedup_entries.set(self.partitions.counters().map(|c| c.dedup().len()).sum::<usize>() as i64);
        metrics
            .dedup_memory_bytes
            .set(self.partitions.counters().map(|c| c.dedup().memory_bytes()).sum::<usize>() as i64);
        Ok(())
    }
}

/// `host-pid`: names the worker in `flushes.worker` and in query ids.
fn worker_id() -> String {
    format!("{}-{}", host_name(), std::process::id())
}

/// This machine's name (`worker` when it has none).
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
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
