//! The benchmark baselines: what the broker delivers and what ClickHouse takes, on the same
//! machine, so that the worker's rate can be read as a share of each.
//!
//! - `costline baseline-consume`: a bare consumer in a fresh group reads the topic from the
//!   start and only counts records.
//! - `costline baseline-insert`: ClickHouse's ceiling for costline's own write set. It rebuilds
//!   the ledger rows a worker wrote for the topic (the same records, cut at the same offsets as
//!   the worker's flushes, read from that run's `flushes`), holds them all in memory, then
//!   inserts them into a fresh database with the same schema and the same number of insert
//!   streams as fast as the server takes them. Reading, counting and building rows happen
//!   before the clock starts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use clickhouse::Row;
use costline_clickhouse::{ClickHouseTarget, LedgerRow, LedgerSink};
use costline_core::{DedupIndex, PartitionCounter, RecordMeta};
use serde::Deserialize;

use crate::config::Config;
use crate::worker;

#[derive(Args, Debug, Clone)]
pub struct ConsumeArgs {
    /// Stop after this many records.
    #[arg(long)]
    pub count: u64,
    /// Give up after this long.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

#[derive(Args, Debug, Clone)]
pub struct InsertArgs {
    /// Records of the topic (all of them).
    #[arg(long)]
    pub count: u64,
    /// The database of the worker run whose flushes to rebuild (its `flushes` table).
    #[arg(long)]
    pub flushes_from: String,
    /// Give up after this long.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
}

pub async fn consume(config: &Config, args: &ConsumeArgs) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let scan =
        costline_kafka::scan_topic(&config.kafka.brokers, &config.kafka.topic, args.count, timeout, |_| {}).await?;
    println!(
        "baseline: consumed {} records ({:.1} MB) in {:.2} s from the first record: {:.0} records/s",
        scan.records,
        scan.payload_bytes as f64 / 1e6,
        scan.seconds_from_first,
        scan.records as f64 / scan.seconds_from_first.max(1e-9)
    );
    Ok(())
}

/// One flush of the measured run: which offsets of which partition it covered.
#[derive(Debug, Row, Deserialize)]
struct Flush {
    kafka_partition: u32,
    next_offset: u64,
}

/// A record held for counting.
struct HeldRecord {
    offset: u64,
    timestamp_ms: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
}

pub async fn insert(config: &Config, args: &InsertArgs) -> anyhow::Result<()> {
    let source = ClickHouseTarget { database: args.flushes_from.clone(), ..worker::clickhouse_target(config) };
    let flushes: Vec<Flush> = source
        .client()
        .query("SELECT kafka_partition, next_offset FROM flushes WHERE kafka_topic = ? ORDER BY kafka_partition, next_offset")
        .bind(&config.kafka.topic)
        .fetch_all()
        .await
        .with_context(|| format!("reading the flushes of `{}`", args.flushes_from))?;
    if flushes.is_empty() {
        bail!("`{}`.flushes has no flush of topic `{}`", args.flushes_from, config.kafka.topic);
    }

    let mut records: HashMap<u32, Vec<HeldRecord>> = HashMap::new();
    let timeout = Duration::from_secs(args.timeout_secs);
    costline_kafka::scan_topic(&config.kafka.brokers, &config.kafka.topic, args.count, timeout, |record| {
        records.entry(record.partition as u32).or_default().push(HeldRecord {
            offset: record.offset as u64,
            timestamp_ms: record.timestamp_ms.unwrap_or(0),
            key: record.key.map(<[u8]>::to_vec),
            payload: record.payload.to_vec(),
        });
    })
    .await?;

    let prices = crate::prices::table::load(&config.pricing)?;
    let pipeline = &config.pipeline;
    let mut rows_by_partition: HashMap<u32, Vec<LedgerRow>> = HashMap::new();
    for (partition, mut held) in records {
        held.sort_by_key(|r| r.offset);
        let mut counter =
            PartitionCounter::new(DedupIndex::new(pipeline.dedup_horizon_secs, pipeline.dedup_grace_secs), 0);
        let mut held = held.into_iter().peekable();
        let rows = rows_by_partition.entry(partition).or_default();
        for flush in flushes.iter().filter(|f| f.kafka_partition == partition) {
            while let Some(record) = held.next_if(|r| r.offset < flush.next_offset) {
                let meta = RecordMeta { offset: record.offset, timestamp_ms: record.timestamp_ms };
                counter.count(meta, record.key.as_deref(), &record.payload, &prices);
            }
            if counter.pending_records() > 0 {
                rows.push(LedgerRow::from_batch(counter.take_batch(), &config.kafka.topic, partition, "ceiling", 0));
            }
        }
    }
    // Insert in the order the worker wrote: the n-th flush of every partition together.
    let mut inserts: Vec<Vec<LedgerRow>> = Vec::new();
    for rows in rows_by_partition.into_values() {
        for (n, row) in rows.into_iter().enumerate() {
            if inserts.len() <= n {
                inserts.push(Vec::new());
            }
            inserts[n].push(row);
        }
    }
    let ledger_rows: usize = inserts.iter().map(Vec::len).sum();

    let target =
        ClickHouseTarget { database: format!("{}_ceiling", args.flushes_from), ..worker::clickhouse_target(config) };
    target
        .server_client()
        .query(&format!("DROP DATABASE IF EXISTS {}", target.database))
        .execute()
        .await
        .context("dropping an earlier ceiling database")?;
    costline_clickhouse::migrate::apply(&target).await.context("creating the ceiling database")?;
    let sink = Arc::new(LedgerSink::new(&target, Duration::from_secs(config.clickhouse.insert_timeout_secs)));
    let streams = config.clickhouse.insert_streams.max(1);
    let queue = Arc::new(std::sync::Mutex::new(inserts.into_iter().enumerate()));
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let (sink, queue) = (sink.clone(), queue.clone());
        writers.spawn(async move {
            loop {
                let next = queue.lock().map_err(|_| anyhow::anyhow!("a ceiling writer panicked"))?.next();
                let Some((n, rows)) = next else { return anyhow::Ok(()) };
                sink.write(&rows, &format!("costline-ceiling-{}-{n}", std::process::id()))
                    .await
                    .with_context(|| format!("insert {n} of the ceiling run"))?;
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.context("a ceiling writer failed")??;
    }
    let secs = started.elapsed().as_secs_f64();
    // The same write set: the rebuilt rows hold what the worker's held, to the pico-dollar.
    let totals = "SELECT toString(sum(attempts)), toString(sum(duplicates)), toString(sum(cost_usd)) FROM usage_day";
    let worker_wrote: (String, String, String) =
        source.client().query(totals).fetch_one().await.context("totals of the run")?;
    let rebuilt: (String, String, String) =
        target.client().query(totals).fetch_one().await.context("totals of the ceiling")?;
    if worker_wrote != rebuilt {
        bail!("the rebuilt ledger rows hold {rebuilt:?} (attempts, duplicates, cost), the worker's {worker_wrote:?}");
    }
    target
        .server_client()
        .query(&format!("DROP DATABASE IF EXISTS {}", target.database))
        .execute()
        .await
        .context("dropping the ceiling database")?;
    println!(
        "ceiling: inserted {ledger_rows} ledger rows holding {} records (rollup totals equal the worker run's) in \
         {secs:.2} s with {streams} insert stream(s): {:.0} records/s",
        args.count,
        args.count as f64 / secs.max(1e-9)
    );
    Ok(())
}
