//! What the progress component needs of the ledger: the writes and read-backs of
//! [`LedgerSink`], as a trait, so that the settle and take-over state machines are tested
//! against an in-memory ledger that fails on command.

use std::collections::HashMap;
use std::future::Future;

use costline_clickhouse::{LedgerRow, LedgerSink, PartitionProgress, RememberedAttempt, SinkError, Targets};

/// A ledger that takes flush rows and tells, table by table, what it holds.
pub trait LedgerStore: Clone + Send + Sync + 'static {
    /// Writes all rows in one insert tagged `query_id`; each row goes to its `targets` only.
    fn write(&self, rows: &[LedgerRow], query_id: &str) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Stops a possibly still running insert and waits until it is gone, so that what is read
    /// afterwards is final.
    fn cancel(&self, query_id: &str) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Progress of every partition of `topic` that was ever flushed (`flushes`).
    fn progress(&self, topic: &str) -> impl Future<Output = Result<HashMap<u32, PartitionProgress>, SinkError>> + Send;

    /// Which tables hold the flush of `partition` that ended at `next_offset`.
    fn tables_holding(
        &self,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> impl Future<Output = Result<Targets, SinkError>> + Send;

    /// The end of a flush that some table holds beyond `after` (the progress in `flushes`).
    fn unfinished_flush(
        &self,
        topic: &str,
        partition: u32,
        after: u64,
    ) -> impl Future<Output = Result<Option<u64>, SinkError>> + Send;

    /// Attempts counted in `partition` with a record time from `from_secs` and an offset below
    /// `below_offset`, in offset order.
    fn remembered(
        &self,
        topic: &str,
        partition: u32,
        from_secs: u32,
        below_offset: u64,
    ) -> impl Future<Output = Result<Vec<RememberedAttempt>, SinkError>> + Send;
}

impl LedgerStore for LedgerSink {
    fn write(&self, rows: &[LedgerRow], query_id: &str) -> impl Future<Output = Result<(), SinkError>> + Send {
        LedgerSink::write(self, rows, query_id)
    }

    fn cancel(&self, query_id: &str) -> impl Future<Output = Result<(), SinkError>> + Send {
        LedgerSink::cancel(self, query_id)
    }

    fn progress(&self, topic: &str) -> impl Future<Output = Result<HashMap<u32, PartitionProgress>, SinkError>> + Send {
        LedgerSink::progress(self, topic)
    }

    fn tables_holding(
        &self,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> impl Future<Output = Result<Targets, SinkError>> + Send {
        LedgerSink::tables_holding(self, topic, partition, next_offset)
    }

    fn unfinished_flush(
        &self,
        topic: &str,
        partition: u32,
        after: u64,
    ) -> impl Future<Output = Result<Option<u64>, SinkError>> + Send {
        LedgerSink::unfinished_flush(self, topic, partition, after)
    }

    fn remembered(
        &self,
        topic: &str,
        partition: u32,
        from_secs: u32,
        below_offset: u64,
    ) -> impl Future<Output = Result<Vec<RememberedAttempt>, SinkError>> + Send {
        LedgerSink::remembered(self, topic, partition, from_secs, below_offset)
    }
}

/// The tables that already hold `row`, after a write of it failed. Tables the row has nothing
/// for (no counted attempt, no rejected record) count as holding it: they never show it.
pub async fn landed<S: LedgerStore>(store: &S, row: &LedgerRow) -> Result<Targets, SinkError> {
    let mut landed = store.tables_holding(&row.kafka_topic, row.kafka_partition, row.next_offset).await?;
    if row.ev_offset.is_empty() {
        landed = landed.with(Targets::EVENTS);
    }
    if row.rj_offset.is_empty() {
        landed = landed.with(Targets::REJECTS);
    }
    Ok(landed)
}
