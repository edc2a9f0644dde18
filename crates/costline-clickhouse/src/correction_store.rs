//! Reading the cost in force of counted attempts and writing reprice chunks
//! (`schemas/clickhouse/005_reprice.sql`). What to correct is decided in
//! [`costline_core::reprice`]; this moves it in and out of ClickHouse.

use std::time::Duration;

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use costline_core::budget::Scope;
use costline_core::reprice::{rollup_corrections, AttemptInForce, Chunk, Correction, Dimensions};
use costline_core::PicoUsd;

use crate::alert_store::scope_filter;
use crate::ledger::Targets;
use crate::migrate::ROLLUPS;
use crate::sink::{bounded, ClickHouseTarget, SinkError};

/// `prompt_version` of the marker rows a chunk leaves in each rollup table (`#` is not valid
/// in a Kafka topic name, so it never meets the workers' progress rows).
pub const MARKER: &str = "#reprice";

/// One `reprice_ledger` row: a chunk's corrections and their rollup sums.
#[derive(Debug, Default, Row, Serialize)]
pub struct RepriceRow {
    pub reprice_id: String,
    pub chunk: String,
    pub targets: Targets,
    pub repriced_at_ms: u64,

    cc_kafka_topic: Vec<String>,
    cc_kafka_partition: Vec<u32>,
    cc_kafka_offset: Vec<u64>,
    cc_event_time: Vec<u32>,
    cc_tenant: Vec<String>,
    cc_endpoint_tag: Vec<String>,
    cc_prompt_version: Vec<String>,
    cc_provider: Vec<String>,
    cc_model: Vec<String>,
    cc_environment: Vec<String>,
    cc_data_mode: Vec<String>,
    cc_cost_delta: Vec<i128>,
    cc_unpriced_delta: Vec<i8>,
    cc_price_version: Vec<String>,

    ru_window_start: Vec<u32>,
    ru_tenant: Vec<String>,
    ru_endpoint_tag: Vec<String>,
    ru_prompt_version: Vec<String>,
    ru_provider: Vec<String>,
    ru_model: Vec<String>,
    ru_environment: Vec<String>,
    ru_data_mode: Vec<String>,
    ru_cost_usd: Vec<i128>,
    ru_unpriced_attempts: Vec<u64>,
}

/// Every table a reprice chunk goes to.
pub const REPRICE_TARGETS: Targets = Targets::MINUTE.with(Targets::HOUR).with(Targets::DAY).with(Targets::CORRECTIONS);

impl RepriceRow {
    /// The row of `chunk`, for the tables in `targets`.
    pub fn new(reprice_id: &str, chunk: &Chunk, targets: Targets, repriced_at_ms: u64) -> RepriceRow {
        let mut row = RepriceRow {
            reprice_id: reprice_id.to_string(),
            chunk: chunk.id.clone(),
            targets,
            repriced_at_ms,
            ..RepriceRow::default()
        };
        for c in &chunk.corrections {
            row.push_correction(c);
        }
        for ((minute, dims), sum) in rollup_corrections(&chunk.corrections) {
            // A negative count wraps: the UInt64 sum in the rollup wraps back.
            row.push_rollup(minute, &dims, sum.cost.0, sum.unpriced_attempts as u64);
        }
        let marker = Dimensions {
            tenant: chunk.id.clone(),
            endpoint_tag: String::new(),
            prompt_version: MARKER.to_string(),
            provider: String::new(),
            model: String::new(),
            environment: String::new(),
            data_mode: String::new(),
        };
        row.push_rollup(chunk.first_minute_secs(), &marker, 0, 0);
        row
    }

    fn push_correction(&mut self, c: &Correction) {
        let a = &c.attempt;
        self.cc_kafka_topic.push(a.kafka_topic.clone());
        self.cc_kafka_partition.push(a.kafka_partition);
        self.cc_kafka_offset.push(a.kafka_offset);
        self.cc_event_time.push(a.event_time_secs);
        let d = &a.dimensions;
        self.cc_tenant.push(d.tenant.clone());
        self.cc_endpoint_tag.push(d.endpoint_tag.clone());
        self.cc_prompt_version.push(d.prompt_version.clone());
        self.cc_provider.push(d.provider.clone());
        self.cc_model.push(d.model.clone());
        self.cc_environment.push(d.environment.clone());
        self.cc_data_mode.push(d.data_mode.clone());
        self.cc_cost_delta.push(c.cost_delta().0);
        self.cc_unpriced_delta.push(c.unpriced_delta());
        self.cc_price_version.push(c.new_price_version.clone());
    }

    fn push_rollup(&mut self, minute: u32, d: &Dimensions, cost: i128, unpriced: u64) {
        self.ru_window_start.push(minute);
        self.ru_tenant.push(d.tenant.clone());
        self.ru_endpoint_tag.push(d.endpoint_tag.clone());
        self.ru_prompt_version.push(d.prompt_version.clone());
        self.ru_provider.push(d.provider.clone());
        self.ru_model.push(d.model.clone());
        self.ru_environment.push(d.environment.clone());
        self.ru_data_mode.push(d.data_mode.clone());
        self.ru_cost_usd.push(cost);
        self.ru_unpriced_attempts.push(unpriced);
    }
}

/// A counted attempt with its cost in force, as the read query returns it.
#[derive(Debug, Row, Deserialize)]
struct AttemptRow {
    kafka_topic: String,
    kafka_partition: u32,
    kafka_offset: u64,
    event_time: u32,
    dimensions: Dimensions,
    input_tokens: u64,
    cached_input_tokens: u64,
    cache_write_tokens: u64,
    cache_write_1h_tokens: u64,
    output_tokens: u64,
    cost: i128,
    price_version: String,
}

impl From<AttemptRow> for AttemptInForce {
    fn from(r: AttemptRow) -> AttemptInForce {
        AttemptInForce {
            kafka_topic: r.kafka_topic,
            kafka_partition: r.kafka_partition,
            kafka_offset: r.kafka_offset,
            event_time_secs: r.event_time,
            dimensions: r.dimensions,
            input_tokens: r.input_tokens,
            cached_input_tokens: r.cached_input_tokens,
            cache_write_tokens: r.cache_write_tokens,
            cache_write_1h_tokens: r.cache_write_1h_tokens,
            output_tokens: r.output_tokens,
            cost: PicoUsd(r.cost),
            price_version: r.price_version,
        }
    }
}

/// A correction read back from `cost_corrections`, to complete a chunk.
#[derive(Debug, Row, Deserialize)]
struct CorrectionRow {
    kafka_topic: String,
    kafka_partition: u32,
    kafka_offset: u64,
    event_time: u32,
    dimensions: Dimensions,
    cost_delta: i128,
    unpriced_delta: i8,
    price_version: String,
}

impl From<CorrectionRow> for Correction {
    fn from(r: CorrectionRow) -> Correction {
        let attempt = AttemptInForce {
            kafka_topic: r.kafka_topic,
            kafka_partition: r.kafka_partition,
            kafka_offset: r.kafka_offset,
            event_time_secs: r.event_time,
            dimensions: r.dimensions,
            input_tokens: 0,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            output_tokens: 0,
            cost: PicoUsd(0),
            // Any text stands for "priced": only the change of priced state is summed.
            price_version: match r.unpriced_delta {
                -1 => String::new(),
                1 => "priced".to_string(),
                _ => r.price_version.clone(),
            },
        };
        Correction { attempt, new_cost: PicoUsd(r.cost_delta), new_price_version: r.price_version }
    }
}

/// A row of the `repricings` audit table.
#[derive(Debug, Clone, Row, Serialize)]
pub struct RepricingRecord {
    pub reprice_id: String,
    pub status: String,
    pub requested_by: String,
    pub host: String,
    pub started_at: u32,
    pub finished_at: u32,
    pub range_from: u32,
    pub range_to: u32,
    pub scope: String,
    pub prices_file: String,
    pub forced: u8,
    pub versions_before: Vec<String>,
    pub versions_after: Vec<String>,
    pub cost_before_usd: i128,
    pub cost_after_usd: i128,
    pub attempts_changed: u64,
    pub chunks: u32,
    pub updated_at_ms: u64,
}

/// The counted attempts with event times in `[?, ?)` (epoch seconds, bound twice: `from, to,
/// from, to`), each with its cost and price version in force (`cost_in_force`,
/// `version_in_force`): its own plus its corrections'.
pub const IN_FORCE: &str = "(SELECT *, cost_usd + correction AS cost_in_force, \
    if(corrections = 0, price_version, corrected_version) AS version_in_force \
    FROM usage_events ANY LEFT JOIN ( \
        SELECT kafka_topic, kafka_partition, kafka_offset, sum(cost_delta) AS correction, count() AS corrections, \
        argMax(price_version, repriced_at_ms) AS corrected_version FROM cost_corrections \
        WHERE event_time >= toDateTime(?) AND event_time < toDateTime(?) \
        GROUP BY kafka_topic, kafka_partition, kafka_offset \
    ) USING (kafka_topic, kafka_partition, kafka_offset) \
    WHERE event_time >= toDateTime(?) AND event_time < toDateTime(?))";

/// Reads and writes what a reprice needs. Every call is bounded by `timeout`.
pub struct RepriceStore {
    /// Reads (on a cluster: the analysts' Distributed tables, every shard).
    client: Client,
    /// Chunk inserts into `reprice_ledger`, whose views fan out on the server written to.
    writer: Client,
    timeout: Duration,
}

impl RepriceStore {
    pub fn new(target: &ClickHouseTarget, timeout: Duration) -> RepriceStore {
        let uncompressed = |client: Client| client.with_compression(clickhouse::Compression::None);
        RepriceStore { client: uncompressed(target.client()), writer: uncompressed(target.local_client()), timeout }
    }

    /// The counted attempts with event times in `[from, to)` (epoch seconds) inside `scope`
    /// that the price table priced (or left unpriced), with their cost and price version in
    /// force. Attempts with the producer's `costUsd` are left out: their cost is the bill.
    pub async fn attempts(&self, from: u32, to: u32, scope: &Scope) -> Result<Vec<AttemptInForce>, SinkError> {
        let (filter, values) = scope_filter(scope);
        let sql = format!(
            "SELECT kafka_topic, kafka_partition, kafka_offset, toUInt32(event_time) AS event_time, tenant, \
             endpoint_tag, prompt_version, provider, model, environment, data_mode, input_tokens, \
             cached_input_tokens, cache_write_tokens, cache_write_1h_tokens, output_tokens, cost_in_force AS cost, \
             version_in_force AS price_version \
             FROM {IN_FORCE} \
             WHERE price_version != 'reported'{filter} \
             ORDER BY kafka_topic, kafka_partition, kafka_offset"
        );
        let mut query = self.client.query(&sql).bind(from).bind(to).bind(from).bind(to);
        for value in values {
            query = query.bind(value);
        }
        let rows = bounded(self.timeout, query.fetch_all::<AttemptRow>()).await?;
        Ok(rows.into_iter().map(AttemptInForce::from).collect())
    }

    /// Writes one chunk row in one `INSERT` tagged `query_id`.
    pub async fn write(&self, row: &RepriceRow, query_id: &str) -> Result<(), SinkError> {
        let write = async {
            let mut insert =
                self.writer.insert::<RepriceRow>("reprice_ledger").await?.with_setting("query_id", query_id);
            insert.write(row).await?;
            insert.end().await
        };
        bounded(self.timeout, write).await
    }

    /// Stops a possibly still running insert and waits until it is gone.
    pub async fn cancel(&self, query_id: &str) -> Result<(), SinkError> {
        bounded(self.timeout, self.writer.query("KILL QUERY WHERE query_id = ? SYNC").bind(query_id).execute()).await
    }

    /// The tables that hold `chunk` (whose first minute is `first_minute`).
    pub async fn landed(&self, chunk: &str, first_minute: u32) -> Result<Targets, SinkError> {
        let mut landed = Targets::NONE;
        let query = self
            .client
            .query("SELECT count() FROM cost_corrections WHERE chunk = ? AND event_time >= toDateTime(?)")
            .bind(chunk)
            .bind(first_minute);
        if bounded(self.timeout, query.fetch_one::<u64>()).await? > 0 {
            landed = landed.with(Targets::CORRECTIONS);
        }
        for &(rollup, bucket, bit) in ROLLUPS {
            let sql = format!(
                "SELECT count() FROM usage_{rollup}_state WHERE window_start = {bucket}(toDateTime(?)) \
                 AND endpoint_tag = '' AND prompt_version = ? AND tenant = ?"
            );
            let query = self.client.query(&sql).bind(first_minute).bind(MARKER).bind(chunk);
            if bounded(self.timeout, query.fetch_one::<u64>()).await? > 0 {
                landed = landed.with(bit);
            }
        }
        Ok(landed)
    }

    /// Chunks of reprices that never finished whose corrections landed but whose marker is
    /// missing from some rollup table: the server applied them half-way. With each, the
    /// tables it is missing from.
    pub async fn unfinished_chunks(&self) -> Result<Vec<(Chunk, Targets)>, SinkError> {
        #[derive(Row, Deserialize)]
        struct Found {
            chunk: String,
            first_minute: u32,
        }
        let query = self.client.query(
            "SELECT chunk, toUInt32(toStartOfMinute(min(event_time))) AS first_minute FROM cost_corrections \
             WHERE reprice_id NOT IN (SELECT reprice_id FROM repricings FINAL WHERE status = 'done') GROUP BY chunk",
        );
        let found = bounded(self.timeout, query.fetch_all::<Found>()).await?;
        let mut out = Vec::new();
        for Found { chunk, first_minute } in found {
            let missing = REPRICE_TARGETS.without(self.landed(&chunk, first_minute).await?);
            if missing == Targets::NONE {
                continue;
            }
            let query = self
                .client
                .query(
                    "SELECT kafka_topic, kafka_partition, kafka_offset, toUInt32(event_time) AS event_time, tenant, \
                     endpoint_tag, prompt_version, provider, model, environment, data_mode, cost_delta, \
                     unpriced_delta, price_version FROM cost_corrections WHERE chunk = ?",
                )
                .bind(&chunk);
            let rows = bounded(self.timeout, query.fetch_all::<CorrectionRow>()).await?;
            let corrections = rows.into_iter().map(Correction::from).collect();
            out.push((Chunk { id: chunk, corrections }, missing));
        }
        Ok(out)
    }

    /// Records (or updates) a reprice in `repricings`.
    pub async fn record(&self, record: &RepricingRecord) -> Result<(), SinkError> {
        let write = async {
            let mut insert = self.client.insert::<RepricingRecord>("repricings").await?;
            insert.write(record).await?;
            insert.end().await
        };
        bounded(self.timeout, write).await
    }
}
