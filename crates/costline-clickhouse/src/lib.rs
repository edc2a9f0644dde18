//! costline's ClickHouse adapter: the schema migrations, the flush ledger that every worker
//! writes, and the read-backs a worker needs when it takes a partition over (where to resume,
//! which identities it must remember).
//!
//! Layout: [`migrate`] applies `schemas/clickhouse/*.sql`; [`ledger`] turns a core
//! `PartitionBatch` into one `flush_ledger` row; [`sink`] inserts rows and reads progress;
//! [`alert_store`] is what the alerts read and their outbox, [`dashboard_store`] the dashboard's reads,
//! [`correction_store`] the cost in force of counted attempts and the reprice chunks.
//! Works on ClickHouse 18.16 (the test server) and on current releases: rows are sent as
//! `RowBinary` without schema validation, which 18.16 does not understand.

pub mod alert_store;
pub mod correction_store;
pub mod dashboard_store;
pub mod ledger;
pub mod migrate;
pub mod sink;

pub use ledger::{LedgerRow, Targets};
pub use sink::{ClickHouseTarget, Cluster, LedgerSink, PartitionProgress, RememberedAttempt, SinkError};

/// This machine's host name: names workers in `flushes` and migrators in `schema_migrations`.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()).filter(|h| !h.is_empty())
}
