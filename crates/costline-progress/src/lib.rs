//! Partition progress: how costline writes each flush exactly once and takes partitions over,
//! whatever crashes, rebalances and outages happen. It knows the ledger only through
//! [`LedgerStore`] (what `costline_clickhouse::LedgerSink` does), so its state machines are
//! unit-tested against an in-memory ledger that fails on command.
//!
//! Layout:
//! - [`settle`]: [`ExactWriter`] writes one job's rows, settles a failed insert table by table
//!   and retries only what is missing; drops rows that are fenced or overtaken.
//! - [`takeover`]: where an assigned partition resumes, its dedup memory, and the
//!   [`UnfinishedFlush`] a dead owner left half-applied.
//! - [`rebalance`]: the rebalance callback's side: take-over on assignment, a revoke that waits
//!   for the lanes to let go.
//! - [`flush_queue`]: closes ready batches into jobs for the writer lanes ([`lane`]: dead
//!   letters first, then the exact write); [`partitions`]: the counters of the partitions held.
//! - [`ownership`] (fencing epochs), [`in_flight`] (jobs per partition), [`lanes`] (which
//!   writer lane a partition keeps), [`retry`] (the one retry wait), [`store`] (the trait).

pub mod flush_queue;
pub mod in_flight;
pub mod lane;
pub mod lanes;
pub mod ownership;
pub mod partitions;
pub mod rebalance;
pub mod retry;
pub mod settle;
pub mod store;
pub mod takeover;

#[cfg(test)]
mod fake_ledger;

pub use flush_queue::{Fencing, FlushQueue, Handover, LaneSettings, LaneStopped};
pub use in_flight::InFlight;
pub use lane::{DeadLetters, FlushReport};
pub use lanes::PartitionLanes;
pub use ownership::{AssignmentLost, Ownership};
pub use partitions::OwnedPartitions;
pub use rebalance::{PartitionChange, PartitionChanges, Rebalance};
pub use retry::{flush_backoff, wait_before_retry, ShutdownWhileRetrying};
pub use settle::{ExactWriter, WriteReport};
pub use store::LedgerStore;
pub use takeover::{
    record_time_bound_ms, DedupSettings, PartitionStart, Replay, Takeover, TakeoverError, UnfinishedFlush,
};
