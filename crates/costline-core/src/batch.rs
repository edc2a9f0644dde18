//! One partition's counting between two flushes.
//!
//! [`PartitionCounter`] owns what must survive flushes (the dedup memory) and a
//! [`PartitionBatch`] that collects what the next flush writes: the counted attempts, the
//! rejected records, the minute rollup and the offset range they cover. Each record moves the
//! batch's `next_offset`, whatever its fate, so a batch written in full means "every record
//! below `next_offset` is accounted for".
//!
//! Events are decoded borrowing from the message; what the batch keeps shares its strings
//! through the batch's [`Symbols`], so a counted event costs one allocation (its request id).

use std::sync::Arc;

use crate::decode::decode_event;
use crate::dedup::{DedupIndex, DedupVerdict, Identity};
use crate::event::{TextField, UsageEvent};
use crate::money::PicoUsd;
use crate::price::{PriceTable, Pricing};
use crate::reject::RejectReason;
use crate::rollup::MinuteRollup;
use crate::symbols::Symbols;

/// How many leading bytes of a rejected payload are kept for inspection.
pub const PAYLOAD_HEAD_BYTES: usize = 256;

/// Where a record sits in its partition, and its Kafka timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    pub offset: u64,
    /// Kafka record timestamp, epoch ms: the clock of the dedup horizon.
    pub timestamp_ms: i64,
}

/// An attempt that counts: priced, with the verdict of the dedup index.
#[derive(Debug, Clone, PartialEq)]
pub struct CountedAttempt {
    pub record: RecordMeta,
    pub event_time_ms: i64,
    pub event: UsageEvent<Arc<str>>,
    pub cost: PicoUsd,
    pub pricing: Pricing,
    pub first_of_request: bool,
}

/// A record that failed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRecord {
    pub record: RecordMeta,
    pub reason: RejectReason,
    /// The first [`PAYLOAD_HEAD_BYTES`] bytes, lossily decoded.
    pub payload_head: String,
    pub payload_bytes: usize,
}

/// The fate of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Counted,
    Duplicate,
    Rejected,
}

/// What one flush of one partition writes.
#[derive(Debug, Clone, Default)]
pub struct PartitionBatch {
    /// First offset covered; `None` while empty.
    pub first_offset: Option<u64>,
    /// One past the last offset covered.
    pub next_offset: u64,
    /// Newest Kafka record time covered, epoch ms.
    pub newest_record_ms: i64,
    pub counted: Vec<CountedAttempt>,
    pub rejected: Vec<RejectedRecord>,
    pub duplicates: u64,
    pub rollup: MinuteRollup,
    /// The strings shared by `counted` and `rollup`.
    pub symbols: Symbols,
}

impl PartitionBatch {
    pub fn is_empty(&self) -> bool {
        self.first_offset.is_none()
    }

    /// Records covered (counted + duplicate + rejected).
    pub fn records(&self) -> u64 {
        self.counted.len() as u64 + self.duplicates + self.rejected.len() as u64
    }

    fn cover(&mut self, record: RecordMeta) {
        self.first_offset.get_or_insert(record.offset);
        self.next_offset = record.offset + 1;
        self.newest_record_ms = self.newest_record_ms.max(record.timestamp_ms);
    }
}

/// Counts the records of one partition, in offset order.
pub struct PartitionCounter {
    dedup: DedupIndex,
    batch: PartitionBatch,
}

impl PartitionCounter {
    pub fn new(dedup: DedupIndex, next_offset: u64) -> PartitionCounter {
        PartitionCounter { dedup, batch: PartitionBatch { next_offset, ..PartitionBatch::default() } }
    }

    /// Offset of the next record this counter expects.
    pub fn next_offset(&self) -> u64 {
        self.batch.next_offset
    }

    /// Decodes, deduplicates, prices and adds one record to the open batch.
    pub fn count(&mut self, record: RecordMeta, payload: &[u8], prices: &PriceTable) -> Outcome {
        self.batch.cover(record);
        let event = match decode_event(payload) {
            Ok(event) => event,
            Err(reason) => {
                let head = &payload[..payload.len().min(PAYLOAD_HEAD_BYTES)];
                self.batch.rejected.push(RejectedRecord {
                    record,
                    reason,
                    payload_head: String::from_utf8_lossy(head).into_owned(),
                    payload_bytes: payload.len(),
                });
                return Outcome::Rejected;
            }
        };
        let event_time_ms = event.event_time_ms(record.timestamp_ms);
        let identity = Identity::new(&event.external_request_id, event.attempt);
        let batch = &mut self.batch;
        match self.dedup.observe(identity, record_secs(record.timestamp_ms)) {
            DedupVerdict::Duplicate => {
                batch.duplicates += 1;
                batch.rollup.window(&event, event_time_ms, &mut batch.symbols).1.duplicates += 1;
                Outcome::Duplicate
            }
            DedupVerdict::Counted { first_of_request } => {
                let (cost, pricing) = prices.price(&event, event_time_ms);
                let (key, measures) = batch.rollup.window(&event, event_time_ms, &mut batch.symbols);
                measures.add_attempt(&event, cost, &pricing, first_of_request);
                // The window's key already holds the dimensions' shared strings.
                let event = event.map_text(|field, text| match field {
                    TextField::UserId => Arc::clone(&key.tenant),
                    TextField::EndpointTag => Arc::clone(&key.endpoint_tag),
                    TextField::PromptVersion => Arc::clone(&key.prompt_version),
                    TextField::Provider => Arc::clone(&key.provider),
                    TextField::Model => Arc::clone(&key.model),
                    TextField::Environment => Arc::clone(&key.environment),
                    TextField::Status | TextField::ErrorCode => batch.symbols.intern(&text),
                    // Request ids are (nearly) all distinct: interning them would only cost.
                    TextField::ExternalRequestId => Arc::from(text),
                });
                batch.counted.push(CountedAttempt { record, event_time_ms, event, cost, pricing, first_of_request });
                Outcome::Counted
            }
        }
    }

    /// Re-remembers an attempt counted before a restart (rebuilding the dedup memory).
    pub fn remember(&mut self, external_request_id: &str, attempt: u32, record_ms: i64) {
        self.dedup.observe(Identity::new(external_request_id, attempt), record_secs(record_ms));
    }

    /// The newest rejected record of the open batch.
    pub fn last_rejected(&self) -> Option<&RejectedRecord> {
        self.batch.rejected.last()
    }

    /// Records in the open batch.
    pub fn pending_records(&self) -> u64 {
        self.batch.records()
    }

    /// Rollup keys (minute × dimensions) in the open batch.
    pub fn pending_keys(&self) -> usize {
        self.batch.rollup.len()
    }

    /// Closes the open batch and starts the next one where it ended, sized like this one (so
    /// that steady traffic fills it without moving it).
    pub fn take_batch(&mut self) -> PartitionBatch {
        let next = PartitionBatch {
            next_offset: self.batch.next_offset,
            counted: Vec::with_capacity(self.batch.counted.len()),
            rollup: MinuteRollup::with_capacity(self.batch.rollup.len()),
            ..PartitionBatch::default()
        };
        std::mem::replace(&mut self.batch, next)
    }

    pub fn dedup(&self) -> &DedupIndex {
        &self.dedup
    }
}

fn record_secs(timestamp_ms: i64) -> u32 {
    (timestamp_ms.max(0) / 1000).min(i64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::DEFAULT_GRACE_SECS;

    fn table() -> PriceTable {
        PriceTable::from_toml(
            "version=\"t\"\n[[price]]\nprovider=\"openai\"\nmodel=\"gpt-4o\"\neffective_from=\"2024-01-01\"\ninput=\"2.5\"\ncached_input=\"1.25\"\noutput=\"10\"\n",
            "t",
        )
        .unwrap()
    }

    fn payload(request: &str, attempt: u32, model: &str) -> Vec<u8> {
        format!(
            r#"{{"externalRequestId":"{request}","attempt":{attempt},"provider":"OpenAI","model":"{model}","endpointTag":"checkout.summary","promptVersion":"v1","userId":"t1","inputTokens":1000,"cachedInputTokens":200,"outputTokens":100,"latencyMs":250,"status":"success","timestamp":"2025-05-01T10:00:30Z"}}"#
        )
        .into_bytes()
    }

    #[test]
    fn counts_duplicates_rejects_and_covers_every_offset() {
        let prices = table();
        let mut counter = PartitionCounter::new(DedupIndex::new(3600, DEFAULT_GRACE_SECS), 10);
        let at = |offset| RecordMeta { offset, timestamp_ms: 1_746_093_630_000 };
        assert_eq!(counter.count(at(10), &payload("a", 1, "gpt-4o"), &prices), Outcome::Counted);
        assert_eq!(counter.count(at(11), &payload("a", 1, "gpt-4o"), &prices), Outcome::Duplicate);
        assert_eq!(counter.count(at(12), &payload("a", 2, "gpt-4o"), &prices), Outcome::Counted);
        assert_eq!(counter.count(at(13), &payload("b", 1, "mystery"), &prices), Outcome::Counted);
        assert_eq!(counter.count(at(15), b"{not json", &prices), Outcome::Rejected);
        let batch = counter.take_batch();
        assert_eq!((batch.first_offset, batch.next_offset, batch.records()), (Some(10), 16, 5));
        assert_eq!(batch.rejected[0].reason.code(), "malformed_json");
        let mut rows: Vec<_> = batch.rollup.iter().collect();
        rows.sort_by(|a, b| a.0.model.cmp(&b.0.model));
        let (key, gpt) = rows[0];
        assert_eq!((key.window_start_secs, &*key.provider), (1_746_093_600, "openai"));
        assert_eq!((gpt.requests, gpt.attempts, gpt.retries(), gpt.duplicates), (1, 2, 1, 1));
        // 800 × 2.5 + 200 × 1.25 + 100 × 10 micro-USD per token... in pico-USD per token.
        assert_eq!(gpt.cost, PicoUsd(2 * (800 * 2_500_000 + 200 * 1_250_000 + 100 * 10_000_000)));
        assert_eq!(rows[1].1.unpriced_attempts, 1);
        assert_eq!(counter.take_batch().next_offset, 16);
        assert!(counter.take_batch().is_empty());
    }
}
