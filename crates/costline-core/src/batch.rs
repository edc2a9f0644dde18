//! One partition's counting between two flushes.
//!
//! [`PartitionCounter`] owns what must survive flushes (the dedup memory) and a
//! [`PartitionBatch`] that collects what the next flush writes: the counted attempts, the
//! rejected records, the minute rollup and the offset range they cover. Each record moves the
//! batch's `next_offset`, whatever its fate, so a batch written in full means "every record
//! below `next_offset` is accounted for".
//!
//! Events are decoded borrowing from the message. The batch keeps counted attempts column by
//! column, as the ledger writes them: an attempt's dimensions are the number of its rollup
//! window, its status and error code ids in the batch's [`Symbols`], its request id a slice of
//! one shared string; so counting an event allocates nothing of its own.

use serde::ser::{Serialize, Serializer};

use crate::decode::EventDecoder;
use crate::dedup::{DedupIndex, DedupVerdict, Identity, RequestHash};
use crate::money::PicoUsd;
use crate::price::{PriceCache, PriceTable, Pricing};
use crate::reject::RejectReason;
use crate::rollup::MinuteRollup;
use crate::symbols::Symbols;

/// Symbol slots of the status and the error code ([`Symbols::id_in`]), after the rollup's.
const STATUS_SLOT: usize = 6;
const ERROR_CODE_SLOT: usize = 7;

/// How many leading bytes of a rejected payload are kept for inspection.
pub const PAYLOAD_HEAD_BYTES: usize = 256;

/// Where a record sits in its partition, and its Kafka timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    pub offset: u64,
    /// Kafka record timestamp, epoch ms: the clock of the dedup horizon.
    pub timestamp_ms: i64,
}

/// Strings stored one after another in one allocation; serialises as a sequence of strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextColumn {
    text: String,
    ends: Vec<usize>,
}

impl TextColumn {
    pub fn with_capacity(strings: usize, bytes: usize) -> TextColumn {
        TextColumn { text: String::with_capacity(bytes), ends: Vec::with_capacity(strings) }
    }

    pub fn push(&mut self, text: &str) {
        self.text.push_str(text);
        self.ends.push(self.text.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of text held.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// The strings in order (with an exact size hint, which serialisers need).
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter()).map(|(start, &end)| &self.text[start..end])
    }
}

impl Serialize for TextColumn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// The attempts a batch counted, one column per field, in the order they were counted.
#[derive(Debug, Clone, Default)]
pub struct CountedAttempts {
    pub offset: Vec<u64>,
    /// Kafka record time, epoch ms.
    pub record_time_ms: Vec<i64>,
    /// Event time, epoch ms.
    pub event_time_ms: Vec<i64>,
    pub external_request_id: TextColumn,
    pub attempt: Vec<u32>,
    pub first_of_request: Vec<bool>,
    /// Number of the attempt's window in the batch's rollup, whose key holds its dimensions
    /// (tenant, endpoint tag, prompt version, provider, model, environment, data mode).
    pub window: Vec<u32>,
    /// Id in the batch's [`Symbols`].
    pub status: Vec<u32>,
    /// Id in the batch's [`Symbols`].
    pub error_code: Vec<u32>,
    pub input_tokens: Vec<u64>,
    pub cached_input_tokens: Vec<u64>,
    pub cache_write_tokens: Vec<u64>,
    pub cache_write_1h_tokens: Vec<u64>,
    pub output_tokens: Vec<u64>,
    pub latency_ms: Vec<Option<u32>>,
    /// Fixed when counted.
    pub cost: Vec<PicoUsd>,
    /// How `cost` was found (the price-table row's version).
    pub pricing: Vec<Pricing>,
}

impl CountedAttempts {
    /// Room for `attempts` attempts (and request ids of `id_bytes` bytes in all).
    fn with_capacity(attempts: usize, id_bytes: usize) -> CountedAttempts {
        CountedAttempts {
            offset: Vec::with_capacity(attempts),
            record_time_ms: Vec::with_capacity(attempts),
            event_time_ms: Vec::with_capacity(attempts),
            external_request_id: TextColumn::with_capacity(attempts, id_bytes),
            attempt: Vec::with_capacity(attempts),
            first_of_request: Vec::with_capacity(attempts),
            window: Vec::with_capacity(attempts),
            status: Vec::with_capacity(attempts),
            error_code: Vec::with_capacity(attempts),
            input_tokens: Vec::with_capacity(attempts),
            cached_input_tokens: Vec::with_capacity(attempts),
            cache_write_tokens: Vec::with_capacity(attempts),
            cache_write_1h_tokens: Vec::with_capacity(attempts),
            output_tokens: Vec::with_capacity(attempts),
            latency_ms: Vec::with_capacity(attempts),
            cost: Vec::with_capacity(attempts),
            pricing: Vec::with_capacity(attempts),
        }
    }

    pub fn len(&self) -> usize {
        self.offset.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offset.is_empty()
    }
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
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome<'a> {
    Counted,
    Duplicate,
    /// Rejected with its reason; the record stays in the open batch.
    Rejected(&'a RejectedRecord),
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
    pub counted: CountedAttempts,
    pub rejected: Vec<RejectedRecord>,
    pub duplicates: u64,
    pub rollup: MinuteRollup,
    /// The strings of `rollup`'s keys and of `counted`'s status and error code ids.
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
    decoder: EventDecoder,
    /// The price rows of the models met, by the open batch's symbol ids.
    prices_met: PriceCache,
    batch: PartitionBatch,
    /// Record times above this count as this (see [`PartitionCounter::bound_record_times`]).
    record_time_bound_ms: i64,
}

impl PartitionCounter {
    pub fn new(dedup: DedupIndex, next_offset: u64) -> PartitionCounter {
        PartitionCounter {
            dedup,
            decoder: EventDecoder::default(),
            prices_met: PriceCache::default(),
            batch: PartitionBatch { next_offset, ..PartitionBatch::default() },
            record_time_bound_ms: i64::MAX,
        }
    }

    /// Counts every later record time above `bound_ms` as `bound_ms`: for decisions, for the
    /// batch's newest record time and for the record time written with each attempt.
    ///
    /// Record times are the dedup memory's clock, and producers set them. The worker bounds
    /// them at its wall clock plus a skew, so that one record dated years ahead cannot make
    /// every remembered identity look expired (nor be remembered itself for years).
    pub fn bound_record_times(&mut self, bound_ms: i64) {
        self.record_time_bound_ms = bound_ms;
    }

    /// Offset of the next record this counter expects.
    pub fn next_offset(&self) -> u64 {
        self.batch.next_offset
    }

    /// Decodes, deduplicates, prices and adds one record to the open batch.
    ///
    /// `key` is the record's Kafka key, which producers set to the `externalRequestId`: the
    /// dedup memory, larger than the caches, starts loading from it while the payload is
    /// decoded. Any key, or none, gives the same outcome; only the wait differs.
    pub fn count(
        &mut self,
        record: RecordMeta,
        key: Option<&[u8]>,
        payload: &[u8],
        prices: &PriceTable,
    ) -> Outcome<'_> {
        let record = RecordMeta { timestamp_ms: record.timestamp_ms.min(self.record_time_bound_ms), ..record };
        self.batch.cover(record);
        let key_hash = key.map(|key| {
            let hash = RequestHash::of(key);
            self.dedup.prefetch(hash);
            (key, hash)
        });
        // Borrowed where it lies: moving the event out would copy its ~300 bytes.
        let decoded = self.decoder.decode(payload);
        let event = match decoded {
            Ok(ref event) => event,
            Err(reason) => {
                let head = &payload[..payload.len().min(PAYLOAD_HEAD_BYTES)];
                let rejected = &mut self.batch.rejected;
                let at = rejected.len();
                rejected.push(RejectedRecord {
                    record,
                    reason,
                    payload_head: String::from_utf8_lossy(head).into_owned(),
                    payload_bytes: payload.len(),
                });
                return Outcome::Rejected(&rejected[at]);
            }
        };
        let event_time_ms = event.event_time_ms(record.timestamp_ms);
        let request = match key_hash {
            Some((key, hash)) if key == event.external_request_id.as_bytes() => hash,
            _ => {
                let hash = RequestHash::of(event.external_request_id.as_bytes());
                self.dedup.prefetch(hash);
                hash
            }
        };
        let identity = Identity::of(request, event.attempt);
        let batch = &mut self.batch;
        // Found before the verdict (they are needed whatever it is), giving a prefetch that
        // started only after decoding time to land.
        let (window, key, measures) = batch.rollup.window(event, event_time_ms, &mut batch.symbols);
        let (cost, pricing) = self.prices_met.price(prices, event, key.provider_and_model(), event_time_ms);
        match self.dedup.observe(identity, record_secs(record.timestamp_ms)) {
            DedupVerdict::Duplicate => {
                batch.duplicates += 1;
                measures.duplicates += 1;
                Outcome::Duplicate
            }
            DedupVerdict::Counted { first_of_request } => {
                measures.add_attempt(event, cost, &pricing, first_of_request);
                let counted = &mut batch.counted;
                counted.offset.push(record.offset);
                counted.record_time_ms.push(record.timestamp_ms);
                counted.event_time_ms.push(event_time_ms);
                counted.external_request_id.push(&event.external_request_id);
                counted.attempt.push(event.attempt);
                counted.first_of_request.push(first_of_request);
                counted.window.push(window);
                counted.status.push(batch.symbols.id_in(STATUS_SLOT, &event.status));
                counted.error_code.push(batch.symbols.id_in(ERROR_CODE_SLOT, &event.error_code));
                counted.input_tokens.push(event.input_tokens);
                counted.cached_input_tokens.push(event.cached_input_tokens);
                counted.cache_write_tokens.push(event.cache_write_tokens);
                counted.cache_write_1h_tokens.push(event.cache_write_1h_tokens);
                counted.output_tokens.push(event.output_tokens);
                counted.latency_ms.push(event.latency_ms);
                counted.cost.push(cost);
                counted.pricing.push(pricing);
                Outcome::Counted
            }
        }
    }

    /// Re-remembers an attempt counted before a restart (rebuilding the dedup memory).
    pub fn remember(&mut self, external_request_id: &str, attempt: u32, record_ms: i64) {
        let record_ms = record_ms.min(self.record_time_bound_ms);
        self.dedup.observe(Identity::new(external_request_id, attempt), record_secs(record_ms));
    }

    /// Records in the open batch.
    pub fn pending_records(&self) -> u64 {
        self.batch.records()
    }

    /// Rollup keys (minute × dimensions) in the open batch.
    pub fn pending_keys(&self) -> usize {
        self.batch.rollup.len()
    }

    /// Closes the open batch and starts the next one where it ended, sized like this one and
    /// an eighth more (so that steady traffic fills it without moving it: a column that
    /// outgrows its room is copied whole; room never used costs address space, not memory).
    pub fn take_batch(&mut self) -> PartitionBatch {
        let counted = &self.batch.counted;
        let room = |used: usize| used + used / 8;
        let next = PartitionBatch {
            next_offset: self.batch.next_offset,
            counted: CountedAttempts::with_capacity(room(counted.len()), room(counted.external_request_id.text_len())),
            rollup: MinuteRollup::with_capacity(room(self.batch.rollup.len())),
            ..PartitionBatch::default()
        };
        self.prices_met.clear();
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
    use crate::rollup::{Dimension, RollupKey};

    /// An outcome without the rejected record it may borrow.
    fn fate(outcome: Outcome<'_>) -> &'static str {
        match outcome {
            Outcome::Counted => "counted",
            Outcome::Duplicate => "duplicate",
            Outcome::Rejected(_) => "rejected",
        }
    }

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
    fn text_column_keeps_each_string_and_serialises_as_a_sequence() {
        let mut column = TextColumn::with_capacity(1, 1);
        for text in ["req-1", "", "ünïcode", "req-22"] {
            column.push(text);
        }
        assert_eq!((column.len(), column.iter().collect::<Vec<_>>()), (4, vec!["req-1", "", "ünïcode", "req-22"]));
        assert_eq!(serde_json::to_string(&column).unwrap(), r#"["req-1","","ünïcode","req-22"]"#);
        assert_eq!(serde_json::to_string(&TextColumn::default()).unwrap(), "[]");
    }

    /// The Kafka key only starts the dedup memory loading: the request's own key, another
    /// request's, none or garbage give the same batch.
    #[test]
    fn the_key_never_changes_what_is_counted() {
        let prices = table();
        let records: Vec<(&str, u32)> = vec![("a", 1), ("a", 1), ("a", 2), ("b", 1), ("a", 2), ("c", 3), ("b", 1)];
        // The request's own key, another request's, none, not even UTF-8.
        let key_of = |scheme: usize, request: &str| -> Option<Vec<u8>> {
            match scheme {
                0 => Some(request.into()),
                1 => Some(if request == "a" { "b" } else { "a" }.into()),
                2 => None,
                _ => Some(vec![0xff, 0x00]),
            }
        };
        let batches: Vec<_> = (0..4)
            .map(|scheme| {
                let mut counter = PartitionCounter::new(DedupIndex::new(3600, DEFAULT_GRACE_SECS), 0);
                for (offset, &(request, attempt)) in records.iter().enumerate() {
                    let at = RecordMeta { offset: offset as u64, timestamp_ms: 1_746_093_630_000 };
                    counter.count(
                        at,
                        key_of(scheme, request).as_deref(),
                        &payload(request, attempt, "gpt-4o"),
                        &prices,
                    );
                }
                let batch = counter.take_batch();
                (
                    batch.duplicates,
                    batch.counted.external_request_id,
                    batch.counted.attempt,
                    batch.counted.first_of_request,
                )
            })
            .collect();
        assert_eq!(batches[0].0, 3);
        assert_eq!(batches[0].3, [true, false, true, true]);
        assert!(batches.iter().all(|batch| *batch == batches[0]), "{batches:?}");
    }

    #[test]
    fn counts_duplicates_rejects_and_covers_every_offset() {
        let prices = table();
        let mut counter = PartitionCounter::new(DedupIndex::new(3600, DEFAULT_GRACE_SECS), 10);
        let at = |offset| RecordMeta { offset, timestamp_ms: 1_746_093_630_000 };
        assert_eq!(counter.count(at(10), Some(b"a"), &payload("a", 1, "gpt-4o"), &prices), Outcome::Counted);
        assert_eq!(counter.count(at(11), Some(b"a"), &payload("a", 1, "gpt-4o"), &prices), Outcome::Duplicate);
        assert_eq!(counter.count(at(12), Some(b"a"), &payload("a", 2, "gpt-4o"), &prices), Outcome::Counted);
        assert_eq!(counter.count(at(13), Some(b"b"), &payload("b", 1, "mystery"), &prices), Outcome::Counted);
        let Outcome::Rejected(rejected) = counter.count(at(15), None, b"{not json", &prices) else {
            panic!("malformed JSON was not rejected")
        };
        assert_eq!((rejected.record.offset, rejected.reason.code(), rejected.payload_bytes), (15, "malformed_json", 9));
        let batch = counter.take_batch();
        assert_eq!((batch.first_offset, batch.next_offset, batch.records()), (Some(10), 16, 5));
        assert_eq!(batch.rejected[0].reason.code(), "malformed_json");
        let counted = &batch.counted;
        assert_eq!(counted.external_request_id.iter().collect::<Vec<_>>(), ["a", "a", "b"]);
        assert_eq!((&counted.offset[..], &counted.attempt[..]), (&[10, 12, 13][..], &[1, 2, 1][..]));
        assert_eq!(counted.first_of_request, [true, false, true]);
        let names = batch.symbols.names();
        assert!(counted.status.iter().all(|&id| &*names[id as usize] == "success"));
        assert!(counted.error_code.iter().all(|&id| names[id as usize].is_empty()));
        let keys: Vec<&RollupKey> = batch.rollup.iter().map(|(key, _)| key).collect();
        let dimension = |i: usize, d| keys[counted.window[i] as usize].dimension(d, names);
        assert_eq!([dimension(0, Dimension::Model), dimension(1, Dimension::Model)], ["gpt-4o"; 2]);
        assert_eq!([dimension(2, Dimension::Model), dimension(2, Dimension::Tenant)], ["mystery", "t1"]);
        assert_eq!(counted.cost[0], PicoUsd(800 * 2_500_000 + 200 * 1_250_000 + 100 * 10_000_000));
        assert!(matches!(&counted.pricing[0], Pricing::Table(version) if version.contains("openai/gpt-4o")));
        assert_eq!((counted.cost[2], &counted.pricing[2]), (PicoUsd::ZERO, &Pricing::Unpriced));
        assert_eq!(counted.event_time_ms, [1_746_093_630_000; 3]);
        let mut rows: Vec<_> = batch.rollup.iter().collect();
        rows.sort_by_key(|(key, _)| key.dimension(Dimension::Model, names));
        let (key, gpt) = rows[0];
        assert_eq!((key.window_start_secs, key.dimension(Dimension::Provider, names)), (1_746_093_600, "openai"));
        assert_eq!((gpt.requests, gpt.attempts, gpt.retries(), gpt.duplicates), (1, 2, 1, 1));
        // 800 × 2.5 + 200 × 1.25 + 100 × 10 micro-USD per token... in pico-USD per token.
        assert_eq!(gpt.cost, PicoUsd(2 * (800 * 2_500_000 + 200 * 1_250_000 + 100 * 10_000_000)));
        assert_eq!(rows[1].1.unpriced_attempts, 1);
        assert_eq!(counter.take_batch().next_offset, 16);
        assert!(counter.take_batch().is_empty());
    }

    /// A record dated in 2100 among traffic of today: with record times bounded, later exact
    /// copies of earlier attempts are still duplicates, the future record is written with the
    /// bounded time, and sweeps go on freeing memory as time passes.
    #[test]
    fn a_record_dated_in_the_future_neither_empties_nor_bloats_the_dedup_memory() {
        const NOW_MS: i64 = 1_800_000_000_000;
        const YEAR_2100_MS: i64 = 4_102_444_800_000;
        const SKEW_MS: i64 = 300_000;
        let prices = table();
        let mut counter = PartitionCounter::new(DedupIndex::new(3600, DEFAULT_GRACE_SECS), 0);
        counter.bound_record_times(NOW_MS + SKEW_MS);
        let mut offset = 0;
        let mut count = |counter: &mut PartitionCounter, request: &str, record_ms: i64| {
            offset += 1;
            let at = RecordMeta { offset, timestamp_ms: record_ms };
            fate(counter.count(at, Some(request.as_bytes()), &payload(request, 1, "gpt-4o"), &prices))
        };
        for i in 0..100 {
            assert_eq!(count(&mut counter, &format!("early-{i}"), NOW_MS + i), "counted");
        }
        for i in 0..8 {
            assert_eq!(count(&mut counter, &format!("future-{i}"), YEAR_2100_MS), "counted");
        }
        for i in (0..100).step_by(33) {
            assert_eq!(count(&mut counter, &format!("early-{i}"), NOW_MS + 5_000), "duplicate", "early-{i}");
        }
        let batch = counter.take_batch();
        assert_eq!(batch.newest_record_ms, NOW_MS + SKEW_MS, "the batch's newest record time is bounded");
        assert_eq!(batch.counted.record_time_ms.iter().max(), Some(&(NOW_MS + SKEW_MS)));

        // Two hours of traffic later (the bound follows the wall clock), everything above is swept.
        let mut advance = |counter: &mut PartitionCounter, at_ms: i64, request: &str| {
            counter.bound_record_times(at_ms + SKEW_MS);
            offset += 1;
            fate(counter.count(
                RecordMeta { offset, timestamp_ms: at_ms },
                None,
                &payload(request, 1, "gpt-4o"),
                &prices,
            ))
        };
        for minute in 1..=120 {
            advance(&mut counter, NOW_MS + minute * 60_000, &format!("later-{minute}"));
        }
        assert!(counter.dedup().len() < 100, "{} requests remembered", counter.dedup().len());
    }
}
