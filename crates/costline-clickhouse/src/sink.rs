//! Writing flushes and reading back what earlier flushes left.
//!
//! A flush is one `INSERT` of ledger rows, tagged with a query id. When an insert fails, the
//! worker does not know whether the server applied it (a timeout, a dropped connection). It
//! then cancels that query id on the server and re-reads progress before writing again, so a
//! flush is never applied twice: see `costline_progress::settle` and `docs/design.md`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clickhouse::{Client, Row};
use serde::Deserialize;

use crate::ledger::{LedgerRow, Targets};
use crate::migrate::ROLLUPS;

/// Where ClickHouse is and who we are there.
#[derive(Clone)]
pub struct ClickHouseTarget {
    /// The server analysts' reads, alerts and migrations go through.
    pub url: String,
    /// The analysts' database.
    pub database: String,
    pub user: String,
    pub password: Option<String>,
    /// Set when the tables live on a cluster of shards and replicas (see [`Cluster`]).
    pub cluster: Option<Cluster>,
}

/// A ClickHouse cluster: its name in the servers' `<remote_servers>` and the HTTP endpoints of
/// each shard's replicas, in the order a worker tries them.
///
/// On a cluster the tables written to are Replicated tables in the *local* database
/// (`<database>_local`) of every server, and the analysts' database holds `Distributed` tables
/// of the same names over them (and the rollup views over those), so every query reads the
/// whole cluster unchanged. A Kafka partition's flushes go to one shard ([`Cluster::shard_of`]).
#[derive(Clone, Debug)]
pub struct Cluster {
    pub name: String,
    pub shards: Vec<Vec<String>>,
}

impl Cluster {
    /// The shard (index into `shards`) a partition's flushes are written to.
    pub fn shard_of(&self, partition: u32) -> usize {
        partition as usize % self.shards.len().max(1)
    }

    /// Every server, shard by shard.
    pub fn servers(&self) -> impl Iterator<Item = &str> {
        self.shards.iter().flatten().map(String::as_str)
    }
}

impl ClickHouseTarget {
    /// A client not bound to the database (for `CREATE DATABASE`).
    pub fn server_client(&self) -> Client {
        self.client_for(&self.url)
    }

    /// A client of the server at `url`, not bound to a database.
    pub fn client_for(&self, url: &str) -> Client {
        let client = Client::default().with_url(url).with_user(&self.user).with_validation(false);
        let client = match &self.password {
            Some(password) => client.with_password(password),
            None => client,
        };
        if self.cluster.is_none() {
            return client;
        }
        // Replicated tables drop a block identical to an earlier one, even when a different
        // insert made it through a materialized view: exactly-once is costline's ledger's job,
        // never ZooKeeper's block hashes. Writes through a Distributed table (alerts) are
        // synchronous, and reads prefer the first replica, so a worker reads what it wrote.
        client
            .with_setting("insert_deduplicate", "0")
            .with_setting("insert_distributed_sync", "1")
            .with_setting("load_balancing", "in_order")
    }

    /// A client bound to the analysts' database (on a cluster: its Distributed tables).
    pub fn client(&self) -> Client {
        self.server_client().with_database(&self.database)
    }

    /// The database the tables written to live in: the analysts' database on one server,
    /// `<database>_local` on each server of a cluster.
    pub fn local_database(&self) -> String {
        match self.cluster {
            Some(_) => format!("{}_local", self.database),
            None => self.database.clone(),
        }
    }

    /// A client bound to the local database of the `url` server.
    pub fn local_client(&self) -> Client {
        self.server_client().with_database(self.local_database())
    }

    /// Clients for each shard's replicas, bound to the local database; one shard of one
    /// replica (the `url` server) without a cluster.
    pub fn shard_clients(&self) -> Vec<Vec<Client>> {
        let local = self.local_database();
        match &self.cluster {
            None => vec![vec![self.local_client()]],
            Some(cluster) => cluster
                .shards
                .iter()
                .map(|replicas| replicas.iter().map(|url| self.client_for(url).with_database(&local)).collect())
                .collect(),
        }
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
    pub kafka_offset: u64,
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

/// The tables a partition's progress is read from: on a cluster, the replica read is first
/// brought up to date with every part its shard logged in ZooKeeper (`SYSTEM SYNC REPLICA`),
/// so a replica that lags can never make a new owner resume behind what was written.
const PROGRESS_TABLES: &[&str] =
    &["flushes", "usage_events", "rejected_events", "usage_minute_state", "usage_hour_state", "usage_day_state"];

/// One shard's replicas and the one in use: a call that fails moves on to the next, and the
/// caller's retry (which re-reads progress first) goes there.
struct Shard {
    replicas: Vec<Client>,
    current: AtomicUsize,
}

impl Shard {
    fn client(&self) -> &Client {
        &self.replicas[self.current.load(Ordering::Relaxed) % self.replicas.len()]
    }

    fn fail_over(&self) {
        if self.replicas.len() > 1 {
            self.current.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Inserts ledger rows and reads progress. Every call is bounded by the insert timeout: a
/// server that stops answering (a dropped route, a hung connection) must not hold a flush, a
/// rebalance or a shutdown forever.
///
/// On one server everything goes to it. On a cluster each partition's rows go to its shard
/// ([`Cluster::shard_of`]); progress is read from every shard and merged, so it is found
/// wherever earlier flushes went, also after shards were added.
#[derive(Clone)]
pub struct LedgerSink {
    shards: Arc<Vec<Shard>>,
    cluster: Option<Cluster>,
    local_database: String,
    insert_timeout: Duration,
}

impl LedgerSink {
    pub fn new(target: &ClickHouseTarget, insert_timeout: Duration) -> LedgerSink {
        // No LZ4: ClickHouse 18.16 fails large compressed inserts into the ledger's views
        // (memory limit on a 2 GiB allocation), while the same rows uncompressed go through.
        let shards = target
            .shard_clients()
            .into_iter()
            .map(|replicas| Shard {
                replicas: replicas.into_iter().map(|c| c.with_compression(clickhouse::Compression::None)).collect(),
                current: AtomicUsize::new(0),
            })
            .collect();
        LedgerSink {
            shards: Arc::new(shards),
            cluster: target.cluster.clone(),
            local_database: target.local_database(),
            insert_timeout,
        }
    }

    /// Awaits one ClickHouse call, at most the insert timeout.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = clickhouse::error::Result<T>>,
    ) -> Result<T, SinkError> {
        bounded(self.insert_timeout, call).await
    }

    /// `call`'s result; a failure moves `shard` on to its next replica.
    async fn on_shard<T>(
        &self,
        shard: usize,
        call: impl std::future::Future<Output = Result<T, SinkError>>,
    ) -> Result<T, SinkError> {
        let result = call.await;
        if result.is_err() {
            self.shards[shard].fail_over();
        }
        result
    }

    /// Writes all rows tagged `query_id`: one `INSERT` per shard holding some of them.
    pub async fn write(&self, rows: &[LedgerRow], query_id: &str) -> Result<(), SinkError> {
        let Some(cluster) = &self.cluster else {
            return self.insert(0, rows.iter(), query_id).await;
        };
        let mut by_shard: Vec<Vec<&LedgerRow>> = vec![Vec::new(); self.shards.len()];
        for row in rows {
            by_shard[cluster.shard_of(row.kafka_partition)].push(row);
        }
        let inserts = by_shard
            .iter()
            .enumerate()
            .filter(|(_, rows)| !rows.is_empty())
            .map(|(shard, rows)| self.on_shard(shard, self.insert(shard, rows.iter().copied(), query_id)));
        futures_util::future::join_all(inserts).await.into_iter().collect()
    }

    async fn insert<'a>(
        &self,
        shard: usize,
        rows: impl Iterator<Item = &'a LedgerRow>,
        query_id: &str,
    ) -> Result<(), SinkError> {
        let mut insert = self.shards[shard]
            .client()
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
    /// afterwards is final. On a cluster it asks every replica (the insert may have gone to
    /// any); a replica that refuses the connection runs nothing.
    pub async fn cancel(&self, query_id: &str) -> Result<(), SinkError> {
        for shard in self.shards.iter() {
            for client in &shard.replicas {
                let kill = client.query("KILL QUERY WHERE query_id = ? SYNC").bind(query_id).execute();
                match self.bounded(kill).await {
                    Err(SinkError::ClickHouse(e)) if self.cluster.is_some() && connection_refused(&e) => {}
                    other => other?,
                }
            }
        }
        Ok(())
    }

    /// Brings the shard's replica in use up to date with its shard (on a cluster).
    async fn sync_replica(&self, shard: usize) -> Result<(), SinkError> {
        if self.cluster.is_none() {
            return Ok(());
        }
        for table in PROGRESS_TABLES {
            let sql = format!("SYSTEM SYNC REPLICA {}.{table}", self.local_database);
            self.bounded(self.shards[shard].client().query(&sql).execute()).await?;
        }
        Ok(())
    }

    /// Progress of every partition of `topic` that was ever flushed.
    pub async fn progress(&self, topic: &str) -> Result<HashMap<u32, PartitionProgress>, SinkError> {
        let mut merged: HashMap<u32, PartitionProgress> = HashMap::new();
        for shard in 0..self.shards.len() {
            for found in self.on_shard(shard, self.shard_progress(shard, topic)).await? {
                let entry = merged.entry(found.kafka_partition).or_insert(found);
                entry.next_offset = entry.next_offset.max(found.next_offset);
                entry.newest_record_secs = entry.newest_record_secs.max(found.newest_record_secs);
            }
        }
        Ok(merged)
    }

    async fn shard_progress(&self, shard: usize, topic: &str) -> Result<Vec<PartitionProgress>, SinkError> {
        self.sync_replica(shard).await?;
        let query = self.shards[shard]
            .client()
            .query(
                "SELECT kafka_partition, max(next_offset) AS next_offset, \
                 toUInt32(max(newest_record_time)) AS newest_record_secs \
                 FROM flushes WHERE kafka_topic = ? GROUP BY kafka_partition",
            )
            .bind(topic);
        self.bounded(query.fetch_all::<PartitionProgress>()).await
    }

    /// Which tables hold the flush of `partition` that ended at `next_offset`: each is asked
    /// on its own (`flush_next_offset` in the per-event tables, the progress row inside each
    /// rollup table, `flushes`), on every shard.
    pub async fn tables_holding(&self, topic: &str, partition: u32, next_offset: u64) -> Result<Targets, SinkError> {
        let mut holding = Targets::NONE;
        for shard in 0..self.shards.len() {
            let found = self.on_shard(shard, self.shard_tables_holding(shard, topic, partition, next_offset)).await?;
            holding = holding.with(found);
        }
        Ok(holding)
    }

    async fn shard_tables_holding(
        &self,
        shard: usize,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> Result<Targets, SinkError> {
        let mut holding = Targets::NONE;
        if self
            .shard_progress(shard, topic)
            .await?
            .iter()
            .any(|p| p.kafka_partition == partition && p.next_offset >= next_offset)
        {
            holding = holding.with(Targets::PROGRESS);
        }
        let client = self.shards[shard].client();
        for (table, bit) in [("usage_events", Targets::EVENTS), ("rejected_events", Targets::REJECTS)] {
            let sql = format!(
                "SELECT count() FROM {table} WHERE kafka_topic = ? AND kafka_partition = ? AND flush_next_offset = ?"
            );
            let query = client.query(&sql).bind(topic).bind(partition).bind(next_offset);
            let found: u64 = self.bounded(query.fetch_one()).await?;
            if found > 0 {
                holding = holding.with(bit);
            }
        }
        for &(rollup, _, bit) in ROLLUPS {
            if self.rollup_progress(client, rollup, topic, partition).await? >= next_offset {
                holding = holding.with(bit);
            }
        }
        Ok(holding)
    }

    /// The end of a flush that some table holds beyond `after` (the progress recorded in
    /// `flushes`): left by a worker that died after ClickHouse applied its flush half-way.
    pub async fn unfinished_flush(&self, topic: &str, partition: u32, after: u64) -> Result<Option<u64>, SinkError> {
        let mut end = 0;
        for shard in 0..self.shards.len() {
            end = end.max(self.on_shard(shard, self.shard_flush_end(shard, topic, partition, after)).await?);
        }
        Ok((end > after).then_some(end))
    }

    async fn shard_flush_end(&self, shard: usize, topic: &str, partition: u32, after: u64) -> Result<u64, SinkError> {
        self.sync_replica(shard).await?;
        let client = self.shards[shard].client();
        let mut end = 0;
        for table in ["usage_events", "rejected_events"] {
            let sql = format!(
                "SELECT max(flush_next_offset) FROM {table} WHERE kafka_topic = ? AND kafka_partition = ? AND kafka_offset >= ?"
            );
            let found: u64 =
                self.bounded(client.query(&sql).bind(topic).bind(partition).bind(after).fetch_one()).await?;
            end = end.max(found);
        }
        for &(rollup, _, _) in ROLLUPS {
            end = end.max(self.rollup_progress(client, rollup, topic, partition).await?);
        }
        Ok(end)
    }

    /// The newest flush end recorded by a rollup table's progress row (0 if none).
    async fn rollup_progress(
        &self,
        client: &Client,
        rollup: &str,
        topic: &str,
        partition: u32,
    ) -> Result<u64, SinkError> {
        let sql = format!(
            "SELECT maxMerge(flush_offset_state) FROM usage_{rollup}_state \
             WHERE endpoint_tag = '' AND prompt_version = ? AND tenant = ?"
        );
        self.bounded(client.query(&sql).bind(topic).bind(partition.to_string()).fetch_one()).await
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
        let mut attempts = Vec::new();
        for shard in 0..self.shards.len() {
            let query = self.shards[shard]
                .client()
                .query(
                    "SELECT kafka_offset, external_request_id, attempt, toUInt32(record_time) AS record_secs \
                     FROM usage_events WHERE kafka_topic = ? AND kafka_partition = ? \
                     AND record_time >= toDateTime(?) AND kafka_offset < ? ORDER BY kafka_offset",
                )
                .bind(topic)
                .bind(partition)
                .bind(from_secs)
                .bind(below_offset);
            let read = async {
                self.sync_replica(shard).await?;
                self.bounded(query.fetch_all::<RememberedAttempt>()).await
            };
            attempts.extend(self.on_shard(shard, read).await?);
        }
        if self.shards.len() > 1 {
            attempts.sort_by_key(|a| a.kafka_offset);
        }
        Ok(attempts)
    }

    /// Drops whole partitions of `usage_events` (one per UTC day of Kafka record time) and
    /// `rejected_events` (one per month) that end before `keep_from_secs`, on every shard.
    /// ClickHouse 18.16 has no TTL, so retention is enforced here. Returns the partitions
    /// dropped.
    pub async fn drop_expired(&self, keep_from_secs: u32) -> Result<Vec<String>, SinkError> {
        let mut dropped = Vec::new();
        for shard in 0..self.shards.len() {
            dropped.extend(self.on_shard(shard, self.shard_drop_expired(shard, keep_from_secs)).await?);
        }
        Ok(dropped)
    }

    async fn shard_drop_expired(&self, shard: usize, keep_from_secs: u32) -> Result<Vec<String>, SinkError> {
        #[derive(Row, Deserialize)]
        struct Part {
            table: String,
            partition: String,
        }
        let client = self.shards[shard].client();
        let (keep_day, keep_month) = partition_ids(keep_from_secs);
        let query = client.query(
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
                self.bounded(client.query(&format!("ALTER TABLE {table} DROP PARTITION {id}")).execute()).await?;
                dropped.push(format!("{table}/{id}"));
            }
        }
        Ok(dropped)
    }

    /// Cheap round trip to every shard, for readiness.
    pub async fn ping(&self) -> Result<(), SinkError> {
        for shard in 0..self.shards.len() {
            let call = self.bounded(self.shards[shard].client().query("SELECT 1").execute());
            self.on_shard(shard, call).await?;
        }
        Ok(())
    }
}

/// Whether `error` is a refused TCP connection: no server listens there, so nothing of ours
/// runs there either.
fn connection_refused(error: &clickhouse::error::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
            return true;
        }
        source = e.source();
    }
    false
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
