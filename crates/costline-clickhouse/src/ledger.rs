//! One `flush_ledger` row per flushed partition batch. The struct's fields are the table's
//! columns in order (RowBinary is positional). The counted attempts' columns are the batch's
//! own, moved; the text ones are written from the batch's rollup keys and symbols by
//! [`WindowDimension`] and [`SymbolColumn`] while the row is serialised.

use std::sync::Arc;

use clickhouse::Row;
use serde::{Serialize, Serializer};

use costline_core::{Dimension, PartitionBatch, Pricing, RejectedRecord, RollupKey, TextColumn};

/// `Array(String)`: one dimension of each counted attempt, read from the key of the rollup
/// window it was counted in.
#[derive(Debug, Default)]
pub struct WindowDimension {
    windows: Arc<[u32]>,
    keys: Arc<[RollupKey]>,
    names: Arc<[Arc<str>]>,
    dimension: Dimension,
}

impl Serialize for WindowDimension {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Every number names a window of the same batch; "" would only show a broken batch.
        serializer.collect_seq(
            self.windows
                .iter()
                .map(|&w| self.keys.get(w as usize).map_or("", |key| key.dimension(self.dimension, &self.names))),
        )
    }
}

/// `Array(String)`: the text of each id in a batch's symbols.
#[derive(Debug, Default)]
pub struct SymbolColumn {
    ids: Vec<u32>,
    names: Arc<[Arc<str>]>,
}

impl Serialize for SymbolColumn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.ids.iter().map(|&id| self.names.get(id as usize).map_or("", |name| &**name)))
    }
}

/// The tables a ledger row is fanned out to, as bits of `flush_ledger.targets` (written as
/// that `UInt8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct Targets(u8);

impl Targets {
    pub const EVENTS: Targets = Targets(1);
    pub const REJECTS: Targets = Targets(2);
    pub const MINUTE: Targets = Targets(4);
    pub const HOUR: Targets = Targets(8);
    pub const DAY: Targets = Targets(16);
    pub const PROGRESS: Targets = Targets(32);
    /// `cost_corrections`: only in `reprice_ledger.targets`, whose rollup bits are these.
    pub const CORRECTIONS: Targets = Targets(64);
    /// Every table of a `flush_ledger` row.
    pub const ALL: Targets = Targets(63);
    pub const NONE: Targets = Targets(0);

    pub fn contains(self, other: Targets) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn without(self, other: Targets) -> Targets {
        Targets(self.0 & !other.0)
    }

    pub const fn with(self, other: Targets) -> Targets {
        Targets(self.0 | other.0)
    }

    /// The bits, as `flush_ledger.targets` and the logs show them.
    pub fn bits(self) -> u8 {
        self.0
    }
}

/// A row of `flush_ledger` (see `schemas/clickhouse/001_ledger.sql`).
#[derive(Debug, Default, Row, Serialize)]
pub struct LedgerRow {
    pub kafka_topic: String,
    pub kafka_partition: u32,
    pub first_offset: u64,
    pub next_offset: u64,
    pub newest_record_time: u32,
    pub duplicate_count: u64,
    pub worker: String,
    pub flushed_at: u32,
    /// The tables this row is still for.
    pub targets: Targets,

    pub ev_offset: Vec<u64>,
    pub ev_record_time: Vec<u32>,
    pub ev_event_time: Vec<u32>,
    pub ev_external_request_id: TextColumn,
    pub ev_attempt: Vec<u32>,
    pub ev_first_of_request: Vec<u8>,
    pub ev_tenant: WindowDimension,
    pub ev_endpoint_tag: WindowDimension,
    pub ev_prompt_version: WindowDimension,
    pub ev_provider: WindowDimension,
    pub ev_model: WindowDimension,
    pub ev_environment: WindowDimension,
    pub ev_data_mode: WindowDimension,
    pub ev_status: SymbolColumn,
    pub ev_error_code: SymbolColumn,
    pub ev_input_tokens: Vec<u64>,
    pub ev_cached_input_tokens: Vec<u64>,
    pub ev_cache_write_tokens: Vec<u64>,
    pub ev_cache_write_1h_tokens: Vec<u64>,
    pub ev_output_tokens: Vec<u64>,
    pub ev_latency_ms: Vec<Option<u32>>,
    pub ev_cost_usd: Vec<i128>,
    pub ev_price_version: Vec<Arc<str>>,

    pub ru_window_start: Vec<u32>,
    pub ru_tenant: Vec<Arc<str>>,
    pub ru_endpoint_tag: Vec<Arc<str>>,
    pub ru_prompt_version: Vec<Arc<str>>,
    pub ru_provider: Vec<Arc<str>>,
    pub ru_model: Vec<Arc<str>>,
    pub ru_environment: Vec<Arc<str>>,
    pub ru_data_mode: Vec<&'static str>,
    pub ru_requests: Vec<u64>,
    pub ru_attempts: Vec<u64>,
    pub ru_duplicates: Vec<u64>,
    pub ru_successes: Vec<u64>,
    pub ru_errors: Vec<u64>,
    pub ru_input_tokens: Vec<u64>,
    pub ru_cached_input_tokens: Vec<u64>,
    pub ru_cache_write_tokens: Vec<u64>,
    pub ru_cache_write_1h_tokens: Vec<u64>,
    pub ru_output_tokens: Vec<u64>,
    pub ru_cost_usd: Vec<i128>,
    pub ru_unpriced_attempts: Vec<u64>,
    pub ru_latency_ms_sum: Vec<u64>,
    pub ru_latency_ms_max: Vec<u32>,
    pub ru_latency_buckets: Vec<Vec<u16>>,
    pub ru_latency_counts: Vec<Vec<u64>>,
    pub ru_flush_offset: Vec<u64>,

    pub rj_offset: Vec<u64>,
    pub rj_record_time: Vec<u32>,
    pub rj_reason_code: Vec<&'static str>,
    pub rj_field: Vec<String>,
    pub rj_reason: Vec<String>,
    pub rj_payload_head: Vec<String>,
    pub rj_payload_bytes: Vec<u32>,
}

fn secs(ms: i64) -> u32 {
    (ms.max(0) / 1000).min(i64::from(u32::MAX)) as u32
}

impl LedgerRow {
    /// The row for one non-empty batch. Consumes the batch: its strings move, not copy.
    pub fn from_batch(batch: PartitionBatch, topic: &str, partition: u32, worker: &str, flushed_at: u32) -> LedgerRow {
        let mut row = LedgerRow::with_capacity(batch.rollup.len() + 1, batch.rejected.len());
        row = LedgerRow {
            kafka_topic: topic.to_string(),
            kafka_partition: partition,
            first_offset: batch.first_offset.unwrap_or(batch.next_offset),
            next_offset: batch.next_offset,
            newest_record_time: secs(batch.newest_record_ms),
            duplicate_count: batch.duplicates,
            worker: worker.to_string(),
            flushed_at,
            targets: Targets::ALL,
            ..row
        };
        // In a month the batch writes anyway, so that the marker adds no part of its own.
        let marker_window = batch
            .rollup
            .iter()
            .map(|(key, _)| key.window_start_secs)
            .min()
            .unwrap_or_else(|| costline_core::rollup::minute_start_secs(batch.newest_record_ms));
        row.push_progress_marker(topic, partition, marker_window);
        let names: Arc<[Arc<str>]> = batch.symbols.into_names().into();
        let text = |key: &RollupKey, dimension| {
            key.text_id(dimension).and_then(|id| names.get(id as usize)).cloned().unwrap_or_default()
        };
        for (key, m) in batch.rollup.iter() {
            row.ru_window_start.push(key.window_start_secs);
            row.ru_tenant.push(text(key, Dimension::Tenant));
            row.ru_endpoint_tag.push(text(key, Dimension::EndpointTag));
            row.ru_prompt_version.push(text(key, Dimension::PromptVersion));
            row.ru_provider.push(text(key, Dimension::Provider));
            row.ru_model.push(text(key, Dimension::Model));
            row.ru_environment.push(text(key, Dimension::Environment));
            row.ru_data_mode.push(key.data_mode.as_str());
            row.ru_requests.push(m.requests);
            row.ru_attempts.push(m.attempts);
            row.ru_duplicates.push(m.duplicates);
            row.ru_successes.push(m.successes);
            row.ru_errors.push(m.errors);
            row.ru_input_tokens.push(m.input_tokens);
            row.ru_cached_input_tokens.push(m.cached_input_tokens);
            row.ru_cache_write_tokens.push(m.cache_write_tokens);
            row.ru_cache_write_1h_tokens.push(m.cache_write_1h_tokens);
            row.ru_output_tokens.push(m.output_tokens);
            row.ru_cost_usd.push(m.cost.0);
            row.ru_unpriced_attempts.push(m.unpriced_attempts);
            row.ru_latency_ms_sum.push(m.latency_ms_sum);
            row.ru_latency_ms_max.push(m.latency_ms_max);
            let (buckets, counts) = m.latency.buckets().unzip();
            row.ru_latency_buckets.push(buckets);
            row.ru_latency_counts.push(counts);
            row.ru_flush_offset.push(0);
        }
        let counted = batch.counted;
        let keys: Arc<[RollupKey]> = batch.rollup.iter().map(|(key, _)| *key).collect();
        let windows: Arc<[u32]> = counted.window.into();
        let dimension = |dimension| WindowDimension {
            windows: Arc::clone(&windows),
            keys: Arc::clone(&keys),
            names: Arc::clone(&names),
            dimension,
        };
        let (reported, unpriced): (Arc<str>, Arc<str>) = (Pricing::Reported.version().into(), "".into());
        row.ev_offset = counted.offset;
        row.ev_record_time = counted.record_time_ms.into_iter().map(secs).collect();
        row.ev_event_time = counted.event_time_ms.into_iter().map(secs).collect();
        row.ev_external_request_id = counted.external_request_id;
        row.ev_attempt = counted.attempt;
        row.ev_first_of_request = counted.first_of_request.into_iter().map(u8::from).collect();
        row.ev_tenant = dimension(Dimension::Tenant);
        row.ev_endpoint_tag = dimension(Dimension::EndpointTag);
        row.ev_prompt_version = dimension(Dimension::PromptVersion);
        row.ev_provider = dimension(Dimension::Provider);
        row.ev_model = dimension(Dimension::Model);
        row.ev_environment = dimension(Dimension::Environment);
        row.ev_data_mode = dimension(Dimension::DataMode);
        row.ev_status = SymbolColumn { ids: counted.status, names: Arc::clone(&names) };
        row.ev_error_code = SymbolColumn { ids: counted.error_code, names };
        row.ev_input_tokens = counted.input_tokens;
        row.ev_cached_input_tokens = counted.cached_input_tokens;
        row.ev_cache_write_tokens = counted.cache_write_tokens;
        row.ev_cache_write_1h_tokens = counted.cache_write_1h_tokens;
        row.ev_output_tokens = counted.output_tokens;
        row.ev_latency_ms = counted.latency_ms;
        row.ev_cost_usd = counted.cost.into_iter().map(|cost| cost.0).collect();
        row.ev_price_version = counted
            .pricing
            .into_iter()
            .map(|pricing| match pricing {
                Pricing::Table(version) => version,
                Pricing::Reported => Arc::clone(&reported),
                Pricing::Unpriced => Arc::clone(&unpriced),
            })
            .collect();
        for RejectedRecord { record, reason, payload_head, payload_bytes } in batch.rejected {
            row.rj_offset.push(record.offset);
            row.rj_record_time.push(secs(record.timestamp_ms));
            row.rj_reason_code.push(reason.code());
            row.rj_field.push(reason.field().to_string());
            row.rj_reason.push(reason.to_string());
            row.rj_payload_head.push(payload_head);
            row.rj_payload_bytes.push(payload_bytes.min(u32::MAX as usize) as u32);
        }
        row
    }

    /// Empty arrays with room for `rollups` rollup rows and `rejects` rejected records, so that
    /// filling them never moves them (the counted attempts' arrays come from the batch).
    fn with_capacity(rollups: usize, rejects: usize) -> LedgerRow {
        macro_rules! reserve {
            ($row:ident, $n:expr, $($field:ident),+) => { $( $row.$field.reserve_exact($n); )+ };
        }
        let mut row = LedgerRow::default();
        reserve!(
            row,
            rollups,
            ru_window_start,
            ru_tenant,
            ru_endpoint_tag,
            ru_prompt_version,
            ru_provider,
            ru_model,
            ru_environment,
            ru_data_mode,
            ru_requests,
            ru_attempts,
            ru_duplicates,
            ru_successes,
            ru_errors,
            ru_input_tokens,
            ru_cached_input_tokens,
            ru_cache_write_tokens,
            ru_cache_write_1h_tokens,
            ru_output_tokens,
            ru_cost_usd,
            ru_unpriced_attempts,
            ru_latency_ms_sum,
            ru_latency_ms_max,
            ru_latency_buckets,
            ru_latency_counts,
            ru_flush_offset
        );
        reserve!(
            row,
            rejects,
            rj_offset,
            rj_record_time,
            rj_reason_code,
            rj_field,
            rj_reason,
            rj_payload_head,
            rj_payload_bytes
        );
        row
    }

    /// The rollup tables' progress row: endpoint tag `""` (no valid event has an empty tag),
    /// the flush's next offset, in the window `window_start_secs`. See
    /// `schemas/clickhouse/002_rollup.sql`.
    fn push_progress_marker(&mut self, topic: &str, partition: u32, window_start_secs: u32) {
        self.ru_window_start.push(window_start_secs);
        let empty: Arc<str> = "".into();
        self.ru_tenant.push(partition.to_string().into());
        self.ru_endpoint_tag.push(Arc::clone(&empty));
        self.ru_prompt_version.push(topic.into());
        for dims in [&mut self.ru_provider, &mut self.ru_model, &mut self.ru_environment] {
            dims.push(Arc::clone(&empty));
        }
        self.ru_data_mode.push("");
        for measure in [
            &mut self.ru_requests,
            &mut self.ru_attempts,
            &mut self.ru_duplicates,
            &mut self.ru_successes,
            &mut self.ru_errors,
            &mut self.ru_input_tokens,
            &mut self.ru_cached_input_tokens,
            &mut self.ru_cache_write_tokens,
            &mut self.ru_cache_write_1h_tokens,
            &mut self.ru_output_tokens,
            &mut self.ru_unpriced_attempts,
            &mut self.ru_latency_ms_sum,
        ] {
            measure.push(0);
        }
        self.ru_cost_usd.push(0);
        self.ru_latency_ms_max.push(0);
        self.ru_latency_buckets.push(Vec::new());
        self.ru_latency_counts.push(Vec::new());
        self.ru_flush_offset.push(self.next_offset);
    }
}
