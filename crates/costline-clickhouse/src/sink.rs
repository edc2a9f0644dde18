//! Writing flushes and reading back what earlier flushes left.
//!
//! A flush is one `INSERT` of ledger rows, tagged with a query id. When an insert fails, the
//! worker does not know whether the server applied it (a timeout, a dropped connection). It
//! then cancels that query id on the server and re-reads progress before writing again, so a
//! flush is never applied twice: see `costline_progress::settle` and `docs/design.md`.

use std::collections::HashMap;
use std::time::Duration;

use clickhouse::{Client, Row};
use serde::Deserialize;

use crate::ledger::{LedgerRow, Targets};
use crate::migrate::ROLLUPS;

/// Where ClickHouse is and who we are there.
#[derive(Clone)]
pub struct ClickHouseTarget {
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: Option<String>,
}

impl ClickHouseTarget {
    /// A client not bound to the database (for `CREATE DATABASE`).
    pub fn server_client(&self) -> Client {
        let client = Client::default().with_url(&self.url).with_user(&self.user).with_validation(false);
        match &self.password {
            Some(password) => client.with_password(password),
            None => client,
        }
    }

    /// A client bound to the costline database.
    pub fn client(&self) -> Client {
        self.server_client().with_database(&self.database)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("ClickHouse request failed: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("ClickHouse did not answer within {0:?}")]
    Timeout(Duration),
}

/// How far earlier flushes got in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Row, Deserialize)]
pub struct PartitionProgress {
    pub kafka_partition: u32,
    /// Every offset below this is accounted for.
    pub next_offset: u64,
    /// Newest Kafka record time counted, epoch seconds.
    pub newest_record_secs: u32,
}

/// A counted attempt read back to rebuild the dedup memory.
#[derive(Debug, Clone, Row, Deserialize)]
pub struct RememberedAttempt {
    pub external_request_id: String,
    pub attempt: u32,
    pub record_secs: u32,
}

/// Awaits one ClickHouse call for at most `timeout`: a server that stops answering (a dropped
/// route, a hung connection) must not hold its caller forever.
pub(crate) async fn bounded<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = clickhouse::error::Result<T>>,
) -> Result<T, SinkError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(SinkError::Timeout(timeout)),
    }
}

/// Inserts ledger rows and reads progress. Every call is bounded by the insert timeout: a
/// server that stops answering (a dropped route, a hung connection) must not hold a flush, a
/// rebalance or a shutdown forever.
#[derive(Clone)]
pub struct LedgerSink {
    client: Client,
    insert_timeout: Duration,
}

impl LedgerSink {
    pub fn new(target: &ClickHouseTarget, insert_timeout: Duration) -> LedgerSink {
        // No LZ4: ClickHouse 18.16 fails large compressed inserts into the ledger's views
        // (memory limit on a 2 GiB allocation), while the same rows uncompressed go through.
        LedgerSink { client: target.client().with_compression(clickhouse::Compression::None), insert_timeout }
    }

    /// Awaits one ClickHouse call, at most the insert timeout.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = clickhouse::error::Result<T>>,
    ) -> Result<T, SinkError> {
        bounded(self.insert_timeout, call).await
    }

    /// Writes all rows in one `INSERT` tagged `query_id`.
    pub async fn write(&self, rows: &[LedgerRow], query_id: &str) -> Result<(), SinkError> {
        let mut insert = self
            .client
            .insert::<LedgerRow>("flush_ledger")
            .await?
            .with_setting("query_id", query_id)
            .with_timeouts(Some(self.insert_timeout), Some(self.insert_timeout));
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Stops a possibly still running insert and waits until it is gone, so that progress read
    /// afterwards is final.
    pub async fn cancel(&self, query_id: &str) -> Result<(), SinkError> {
        self.bounded(self.client.query("KILL QUERY WHERE query_id = ? SYNC").bind(query_id).execute()).await?;
        Ok(())
    }

    /// Progress of every partition of `topic` that was ever flushed.
    pub async fn progress(&self, topic: &str) -> Result<HashMap<u32, PartitionProgress>, SinkError> {
        let query = self
            .client
            .query(
                "SELECT kafka_partition, max(next_offset) AS next_offset, \
                 toUInt32(max(newest_record_time)) AS newest_record_secs \
                 FROM flushes WHERE kafka_topic = ? GROUP BY kafka_partition",
            )
            .bind(topic);
        let rows = self.bounded(query.fetch_all::<PartitionProgress>()).await?;
        Ok(rows.into_iter().map(|p| (p.kafka_partition, p)).collect())
    }

    /// Which tables hold the flush of `partition` that ended at `next_offset`: each is asked
    /// on its own (`flush_next_offset` in the per-event tables, the progress row inside each
    /// rollup table, `flushes`).
    pub async fn tables_holding(&self, topic: &str, partition: u32, next_offset: u64) -> Result<Targets, SinkError> {
        let mut holding = Targets::NONE;
        if self.progress(topic).await?.get(&partition).is_some_and(|p| p.next_offset >= next_offset) {
            holding = holding.with(Targets::PROGRESS);
        }
        for (table, bit) in [("usage_events", Targets::EVENTS), ("rejected_events", Targets::REJECTS)] {
            let sql = format!(
                "SELECT count() FROM {table} WHERE kafka_topic = ? AND kafka_partition = ? AND flush_next_offset = ?"
            );
            let query = self.client.query(&sql).bind(topic).bind(partition).bind(next_offset);
            let found: u64 = self.bounded(query.fetch_one()).await?;
            if found > 0 {
                holding = holding.with(bit);
            }
        }
        for &(rollup, _, bit) in ROLLUPS {
            if self.rollup_progress(rollup, topic, partition).await? >= next_offset {
                holding = holding.with(bit);
            }
        }
        Ok(holding)
    }

    /// The end of a flush that some table holds beyond `after` (the progress recorded in
    /// `flushes`): left by a worker that died after ClickHouse applied its flush half-way.
    pub async fn unfinished_flush(&self, topic: &str, partition: u32, after: u64) -> Result<Option<u64>, SinkError> {
        let mut end = 0;
        for table in ["usage_events", "rejected_events"] {
            let sql = format!(
                "SELECT max(flush_next_offset) FROM {table} WHERE kafka_topic = ? AND kafka_partition = ? AND kafka_offset >= ?"
            );
            let found: u64 =
                self.bounded(self.client.query(&sql).bind(topic).bind(partition).bind(after).fetch_one()).await?;
            end = end.max(found);
        }
        for &(rollup, _, _) in ROLLUPS {
            end = end.max(self.rollup_progress(rollup, topic, partition).await?);
        }
        Ok((end > after).then_some(end))
    }

    /// The newest flush end recorded by a rollup table's progress row (0 if none).
    async fn rollup_progress(&self, rollup: &str, topic: &str, partition: u32) -> Result<u64, SinkError> {
        let sql = format!(
            "SELECT maxMerge(flush_offset_state) FROM usage_{rollup}_state \
             WHERE endpoint_tag = '' AND prompt_version = ? AND tenant = ?"
        );
        self.bounded(self.client.query(&sql).bind(topic).bind(partition.to_string()).fetch_one()).await
    }

    /// Attempts counted in `partition` with a record time from `from_secs` and an offset below
    /// `below_offset`, in offset order.
    pub async fn remembered(
        &self,
        topic: &str,
        partition: u32,
        from_secs: u32,
        below_offset: u64,
    ) -> Result<Vec<RememberedAttempt>, SinkError> {
        let query = self
            .client
            .query(
                "SELECT external_request_id, attempt, toUInt32(record_time) AS record_secs FROM usage_events \
                 WHERE kafka_topic = ? AND kafka_partition = ? AND record_time >= toDateTime(?) AND kafka_offset < ? \
                 ORDER BY kafka_offset",
            )
            .bind(topic)
            .bind(partition)
            .bind(from_secs)
            .bind(below_offset);
        self.bounded(query.fetch_all::<RememberedAttempt>()).await
    }

    /// Drops whole partitions of `usage_events` (one per UTC day of Kafka record time) and
    /// `rejected_events` (one per month) that end before `keep_from_secs`. ClickHouse 18.16 has
    /// no TTL, so retention is enforced here. Returns the partitions dropped.
    pub async fn drop_expired(&self, keep_from_secs: u32) -> Result<Vec<String>, SinkError> {
        #[derive(Row, Deserialize)]
        struct Part {
            table: String,
            partition: String,
        }
        let (keep_day, keep_month) = partition_ids(keep_from_secs);
        let query = self.client.query(
            "SELECT table, partition FROM system.parts WHERE database = currentDatabase() AND active \
             AND table IN ('usage_events', 'rejected_events') GROUP BY table, partition",
        );
        let parts = self.bounded(query.fetch_all::<Part>()).await?;
        let mut dropped = Vec::new();
        for Part { table, partition } in parts {
            let Ok(id) = partition.parse::<u32>() else {
                continue;
            };
            let expired = if table == "usage_events" { id < keep_day } else { id < keep_month };
            if expired {
                self.bounded(self.client.query(&format!("ALTER TABLE {table} DROP PARTITION {id}")).execute()).await?;
                dropped.push(format!("{table}/{id}"));
            }
        }
        Ok(dropped)
    }

    /// Cheap round trip for readiness.
    pub async fn ping(&self) -> Result<(), SinkError> {
        self.bounded(self.client.query("SELECT 1").execute()).await?;
        Ok(())
    }
}

/// `(YYYYMMDD, YYYYMM)` of the UTC day holding `secs`.
fn partition_ids(secs: u32) -> (u32, u32) {
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::from(secs / 86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let month_id = (year * 100 + month) as u32;
    (month_id * 100 + day as u32, month_id)
}

#[cfg(test)]
mod tests {
    #[test]
    fn partition_ids_are_utc_days_and_months() {
        assert_eq!(super::partition_ids(0), (19_700_101, 197_001));
        assert_eq!(super::partition_ids(1_795_608_125), (20_261_125, 202_611));
        assert_eq!(super::partition_ids(951_782_400), (20_000_229, 200_002));
    }
}
