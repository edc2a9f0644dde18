//! Writing one job's ledger rows exactly once, as long as their partitions stay ours.
//!
//! When an insert fails, the writer cannot know what ClickHouse applied: a timeout or a
//! dropped connection can hide a success, and a server failing half-way through the fan-out
//! (seen when ClickHouse shuts down during an insert) leaves some tables written and others
//! not. Before writing again it *settles* the failed insert: kills that query on the server
//! (`KILL QUERY … SYNC`, so it cannot land later), asks each table whether it holds the flush,
//! and retries the row with only the missing tables in its `targets`. Each table thus receives
//! each flush once. A row whose partition another writer has advanced past its start is
//! *overtaken* and dropped, never retried; so is a row whose partition is no longer ours
//! (*fenced*: its next owner replays it).
//!
//! ```text
//!  rows ──▶ drop fenced ──▶ insert ──ok──▶ done
//!             ▲               │ failed
//!             │               ▼
//!             └── backoff ◀── settle: cancel, read progress and each table,
//!                   ▲          drop overtaken rows, narrow targets to what is missing
//!                   └─ settle failed (ClickHouse still away): settle again before any insert
//! ```

use std::time::{Duration, Instant};

use costline_clickhouse::{LedgerRow, SinkError, Targets};
use costline_core::backoff::Backoff;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::retry::{wait_before_retry, ShutdownWhileRetrying};
use crate::store::{landed, LedgerStore};

const CLICKHOUSE_STUCK: &str = "ClickHouse was refusing a flush";

/// What a write tells the worker's metrics and readiness.
pub trait WriteReport {
    /// One insert ended, written or not, after `elapsed`.
    fn insert_took(&self, elapsed: Duration);
    /// An insert failed; the lane stays stuck until a write of it succeeds.
    fn insert_failed(&self);
    /// A row was dropped unwritten: its partition is no longer ours, or another writer
    /// overtook it.
    fn row_dropped(&self);
    /// A failed insert had reached some of a row's tables: the retry writes only the others.
    fn partial_write_found(&self);
}

/// Writes jobs of ledger rows, one after another, each exactly once.
pub struct ExactWriter<S> {
    store: S,
    topic: String,
    /// Starts every query id of this writer, which must be unique on the server
    /// (`worker-lane`).
    query_prefix: String,
    /// Number of the job being written, for query ids.
    job_seq: u64,
    retry: Backoff,
    shutdown: CancellationToken,
}

impl<S: LedgerStore> ExactWriter<S> {
    pub fn new(store: S, topic: &str, query_prefix: String, retry: Backoff, shutdown: CancellationToken) -> Self {
        ExactWriter { store, topic: topic.to_string(), query_prefix, job_seq: 0, retry, shutdown }
    }

    /// Writes one job's rows as one insert, settled and retried until every table holds them,
    /// as long as `owns` says their partition is still ours. Returns the partitions whose rows
    /// were dropped instead. Fails only at shutdown.
    pub async fn write(
        &mut self,
        mut rows: Vec<LedgerRow>,
        owns: impl Fn(i32) -> bool,
        report: &impl WriteReport,
    ) -> Result<Vec<i32>, ShutdownWhileRetrying> {
        self.job_seq += 1;
        let mut dropped = Vec::new();
        let mut backoff = self.retry.clone();
        backoff.reset();
        let mut attempt = 0u32;
        // The query id of an insert that failed and is not settled yet.
        let mut unsure: Option<String> = None;
        loop {
            drop_fenced(&mut rows, &owns, &mut dropped, report);
            if let Some(query_id) = unsure.take() {
                let settled = if rows.is_empty() {
                    // Nothing of ours left to write; still stop the failed insert if it can be reached.
                    self.store.cancel(&query_id).await
                } else {
                    self.settle(&query_id, &mut rows, &mut dropped, report).await
                };
                if let Err(e) = settled {
                    warn!(error = %e, query_id, "ClickHouse still unavailable");
                    if !rows.is_empty() {
                        unsure = Some(query_id);
                    }
                    wait_before_retry(&mut backoff, &self.shutdown, CLICKHOUSE_STUCK).await?;
                    continue;
                }
            }
            if rows.is_empty() {
                break;
            }
            attempt += 1;
            let query_id = format!("{}-{}-{}", self.query_prefix, self.job_seq, attempt);
            let started = Instant::now();
            let written = self.store.write(&rows, &query_id).await;
            report.insert_took(started.elapsed());
            match written {
                Ok(()) => break,
                Err(e) => {
                    report.insert_failed();
                    warn!(error = %e, attempt, query_id, rows = rows.len(), "flush insert failed; will retry");
                    unsure = Some(query_id);
                    wait_before_retry(&mut backoff, &self.shutdown, CLICKHOUSE_STUCK).await?;
                }
            }
        }
        Ok(dropped)
    }

    /// After a failed insert: make sure it cannot land later, then find, table by table, what
    /// it did write, so that the retry writes each table exactly once. A row whose partition's
    /// recorded progress moved past its first offset to anywhere but its own end was overtaken
    /// by another writer of the partition (a new owner that replayed it): it is dropped, never
    /// retried.
    async fn settle(
        &self,
        query_id: &str,
        rows: &mut Vec<LedgerRow>,
        dropped: &mut Vec<i32>,
        report: &impl WriteReport,
    ) -> Result<(), SinkError> {
        self.store.cancel(query_id).await?;
        let progress = self.store.progress(&self.topic).await?;
        // Read every row's tables before changing any row: a failed read leaves all unsettled.
        let mut found = Vec::with_capacity(rows.len());
        for row in rows.iter() {
            found.push(landed(&self.store, row).await?);
        }
        for (row, landed) in rows.iter_mut().zip(found) {
            // Flushes of a partition held under one epoch are written in order, one at a time,
            // so recorded progress past the row's start can only be the row's own end or
            // another writer's: beyond the row's end, the tables that seem to hold the row
            // hold that writer's flushes instead.
            let overtaken = progress
                .get(&row.kafka_partition)
                .is_some_and(|p| p.next_offset > row.first_offset && p.next_offset != row.next_offset);
            if overtaken {
                report.row_dropped();
                error!(
                    partition = row.kafka_partition,
                    first_offset = row.first_offset,
                    next_offset = row.next_offset,
                    "another writer advanced this partition past the failed flush; dropped, not retried"
                );
                row.targets = Targets::NONE;
                dropped.push(row.kafka_partition as i32);
                continue;
            }
            let remaining = row.targets.without(landed);
            if remaining != row.targets {
                report.partial_write_found();
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
}

/// Drops the rows of partitions this worker no longer owns (noting them in `dropped`): their
/// next owner replays them.
fn drop_fenced(
    rows: &mut Vec<LedgerRow>,
    owns: &impl Fn(i32) -> bool,
    dropped: &mut Vec<i32>,
    report: &impl WriteReport,
) {
    rows.retain(|row| {
        let partition = row.kafka_partition as i32;
        let owned = owns(partition);
        if !owned {
            dropped.push(partition);
            report.row_dropped();
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

#[cfg(test)]
mod tests;
