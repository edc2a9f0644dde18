//! Repricing counted attempts after a price is fixed: which attempts change cost, by how much,
//! and how the changes are cut into chunks that are written whole or not at all.
//!
//! A counted attempt keeps the cost it was counted with; a reprice adds corrections. The cost
//! in force is the counted cost plus the corrections so far, and a reprice corrects towards the
//! cost the price table gives now: an attempt already at that cost yields no correction, so
//! running a reprice again, or again after it was killed half-way, changes nothing more.
//!
//! A chunk's id is a hash of what it changes. A chunk that ClickHouse applied to some of its
//! tables only is completed from the one table it reached (see `schemas/clickhouse/005_reprice.sql`).

use std::collections::BTreeMap;

use xxhash_rust::xxh3::Xxh3;

use crate::event::{DataMode, UsageEvent};
use crate::money::PicoUsd;
use crate::price::{PriceTable, Pricing};
use crate::rollup::minute_start_secs;

/// The rollup dimensions of an attempt (SPEC §3), as stored (in this column order).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
pub struct Dimensions {
    pub tenant: String,
    pub endpoint_tag: String,
    pub prompt_version: String,
    pub provider: String,
    pub model: String,
    pub environment: String,
    pub data_mode: String,
}

/// A counted attempt as `usage_events` and its corrections hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptInForce {
    pub kafka_topic: String,
    pub kafka_partition: u32,
    pub kafka_offset: u64,
    pub event_time_secs: u32,
    pub dimensions: Dimensions,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub output_tokens: u64,
    /// The counted cost plus every correction so far.
    pub cost: PicoUsd,
    /// The price version in force (`""`: unpriced).
    pub price_version: String,
}

/// How one attempt's cost changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correction {
    pub attempt: AttemptInForce,
    pub new_cost: PicoUsd,
    pub new_price_version: String,
}

impl Correction {
    pub fn cost_delta(&self) -> PicoUsd {
        PicoUsd(self.new_cost.0 - self.attempt.cost.0)
    }

    /// −1 when an unpriced attempt becomes priced, +1 the other way, else 0.
    pub fn unpriced_delta(&self) -> i8 {
        i8::from(self.new_price_version.is_empty()) - i8::from(self.attempt.price_version.is_empty())
    }
}

/// The correction `table` makes to `attempt`, or `None` when its cost and priced state stay.
/// Attempts priced by the producer's `costUsd` are never handed in: their cost is the bill.
pub fn correct(attempt: &AttemptInForce, table: &PriceTable) -> Option<Correction> {
    let dims = &attempt.dimensions;
    let event = UsageEvent {
        external_request_id: "",
        provider: dims.provider.as_str(),
        model: dims.model.as_str(),
        endpoint_tag: dims.endpoint_tag.as_str(),
        prompt_version: dims.prompt_version.as_str(),
        user_id: dims.tenant.as_str(),
        input_tokens: attempt.input_tokens,
        output_tokens: attempt.output_tokens,
        cached_input_tokens: attempt.cached_input_tokens,
        cache_write_tokens: attempt.cache_write_tokens,
        cache_write_1h_tokens: attempt.cache_write_1h_tokens,
        latency_ms: None,
        status: "",
        data_mode: DataMode::parse(&dims.data_mode).unwrap_or(DataMode::Real),
        environment: dims.environment.as_str(),
        attempt: 1,
        timestamp_ms: None,
        cost_usd: None,
        error_code: "",
    };
    let (new_cost, pricing) = table.price(&event, i64::from(attempt.event_time_secs) * 1000);
    let new_price_version = match pricing {
        Pricing::Table(version) => version.to_string(),
        Pricing::Unpriced | Pricing::Reported => String::new(),
    };
    let correction = Correction { attempt: attempt.clone(), new_cost, new_price_version };
    (correction.cost_delta().0 != 0 || correction.unpriced_delta() != 0).then_some(correction)
}

/// Corrections written in one insert, named by a hash of their content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub id: String,
    pub corrections: Vec<Correction>,
}

impl Chunk {
    /// The first minute any correction falls in: where the chunk's marker rows go.
    pub fn first_minute_secs(&self) -> u32 {
        self.corrections
            .iter()
            .map(|c| minute_start_secs(i64::from(c.attempt.event_time_secs) * 1000))
            .min()
            .unwrap_or(0)
    }
}

/// Cuts corrections into chunks of at most `max_attempts` (at least 1), in Kafka position
/// order. The same corrections give the same chunks and ids.
pub fn chunks(mut corrections: Vec<Correction>, max_attempts: usize) -> Vec<Chunk> {
    corrections.sort_by(|a, b| {
        let key = |c: &Correction| (c.attempt.kafka_topic.clone(), c.attempt.kafka_partition, c.attempt.kafka_offset);
        key(a).cmp(&key(b))
    });
    let mut out = Vec::new();
    let mut rest = corrections.into_iter().peekable();
    while rest.peek().is_some() {
        let corrections: Vec<Correction> = rest.by_ref().take(max_attempts.max(1)).collect();
        out.push(Chunk { id: chunk_id(&corrections), corrections });
    }
    out
}

fn chunk_id(corrections: &[Correction]) -> String {
    let mut hasher = Xxh3::new();
    for c in corrections {
        for text in [&c.attempt.kafka_topic, &c.new_price_version, &c.attempt.price_version] {
            hasher.update(&(text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
        }
        hasher.update(&c.attempt.kafka_partition.to_le_bytes());
        hasher.update(&c.attempt.kafka_offset.to_le_bytes());
        hasher.update(&c.attempt.cost.0.to_le_bytes());
        hasher.update(&c.new_cost.0.to_le_bytes());
    }
    format!("{:032x}", hasher.digest128())
}

/// What a chunk adds to one rollup key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollupCorrection {
    pub cost: PicoUsd,
    pub unpriced_attempts: i64,
}

/// The corrections summed per minute and dimension set.
pub fn rollup_corrections<'a>(
    corrections: impl IntoIterator<Item = &'a Correction>,
) -> BTreeMap<(u32, Dimensions), RollupCorrection> {
    let mut out: BTreeMap<(u32, Dimensions), RollupCorrection> = BTreeMap::new();
    for c in corrections {
        let minute = minute_start_secs(i64::from(c.attempt.event_time_secs) * 1000);
        let entry = out.entry((minute, c.attempt.dimensions.clone())).or_default();
        entry.cost += c.cost_delta();
        entry.unpriced_attempts += i64::from(c.unpriced_delta());
    }
    out
}

/// One provider and model's change, for the dry-run and the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelChange {
    pub attempts: u64,
    pub cost_before: PicoUsd,
    pub cost_after: PicoUsd,
    pub priced_before: u64,
    pub priced_after: u64,
}

/// `(provider, model)` → what changes.
pub fn changes_by_model<'a>(
    corrections: impl IntoIterator<Item = &'a Correction>,
) -> BTreeMap<(String, String), ModelChange> {
    let mut out: BTreeMap<(String, String), ModelChange> = BTreeMap::new();
    for c in corrections {
        let dims = &c.attempt.dimensions;
        let change = out.entry((dims.provider.clone(), dims.model.clone())).or_default();
        change.attempts += 1;
        change.cost_before += c.attempt.cost;
        change.cost_after += c.new_cost;
        change.priced_before += u64::from(!c.attempt.price_version.is_empty());
        change.priced_after += u64::from(!c.new_price_version.is_empty());
    }
    out
}

/// The distinct table versions of `price_versions`, sorted: what the audit record lists.
pub fn table_versions<'a>(price_versions: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let set: std::collections::BTreeSet<&str> = price_versions.into_iter().map(table_version).collect();
    set.into_iter().map(str::to_string).collect()
}

/// The table version of a price version (`2026-12-07:anthropic/claude…` → `2026-12-07`),
/// `unpriced` for none.
pub fn table_version(price_version: &str) -> &str {
    if price_version.is_empty() {
        return "unpriced";
    }
    price_version.split_once(':').map_or(price_version, |(table, _)| table)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = r#"
version = "t2"
[[price]]
provider = "acme"
model = "m1"
effective_from = "2026-01-01"
input = "2"
output = "10"
[[price]]
provider = "acme"
model = "m1"
effective_from = "2026-06-01"
input = "1"
cached_input = "0.1"
cache_write_1h = "2"
output = "5"
"#;

    fn attempt(offset: u64, model: &str, day: u32, cost: i128, version: &str) -> AttemptInForce {
        AttemptInForce {
            kafka_topic: "usage".into(),
            kafka_partition: 0,
            kafka_offset: offset,
            event_time_secs: 1_767_225_600 + day * 86_400, // 2026-01-01 + day
            dimensions: Dimensions {
                tenant: "t".into(),
                endpoint_tag: "e".into(),
                prompt_version: "v".into(),
                provider: "acme".into(),
                model: model.into(),
                environment: "prod".into(),
                data_mode: "real".into(),
            },
            input_tokens: 1000,
            cached_input_tokens: 400,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            output_tokens: 100,
            cost: PicoUsd(cost),
            price_version: version.into(),
        }
    }

    #[test]
    fn corrects_towards_the_table_and_leaves_attempts_at_it() {
        let table = PriceTable::from_toml(TABLE, "test").unwrap();
        // Unpriced on 2026-01-11: 1000 × 2 + 100 × 10 micro-USD = 3000 micro = 3_000_000_000 pico.
        let unpriced = attempt(1, "m1", 10, 0, "");
        let c = correct(&unpriced, &table).unwrap();
        assert_eq!(c.new_cost, PicoUsd(3_000 * 1_000_000));
        assert_eq!((c.cost_delta(), c.unpriced_delta()), (PicoUsd(3_000_000_000), -1));
        assert_eq!(table_version(&c.new_price_version), "t2");
        assert_eq!(table_versions(["t2:a", "", "t1:b", "t2:c"]), ["t1", "t2", "unpriced"]);
        // On 2026-07-01 the second row: 600 × 1 + 400 × 0.1 + 100 × 5 = 1140 micro-USD.
        let july = attempt(2, "m1", 181, 5, "t1:acme/m1@2026-06-01");
        let c = correct(&july, &table).unwrap();
        assert_eq!(
            (c.new_cost, c.cost_delta(), c.unpriced_delta()),
            (PicoUsd(1_140_000_000), PicoUsd(1_139_999_995), 0)
        );
        // 1-hour cache writes at their own price: 500 × 1 + 400 × 0.1 + 100 × 2 + 100 × 5 = 1240.
        let with_1h = AttemptInForce { cache_write_1h_tokens: 100, ..attempt(6, "m1", 181, 0, "t1:x") };
        assert_eq!(correct(&with_1h, &table).unwrap().new_cost, PicoUsd(1_240_000_000));
        // Already at the table's cost: nothing, whatever version string it carries.
        let settled = attempt(3, "m1", 181, 1_140_000_000, "t1:acme/m1@2026-06-01");
        assert_eq!(correct(&settled, &table), None);
        // A model the table does not know becomes (or stays) unpriced at cost 0.
        assert_eq!(correct(&attempt(4, "other", 10, 0, ""), &table), None);
        let c = correct(&attempt(5, "other", 10, 7, "t1:acme/other@2026-01-01"), &table).unwrap();
        assert_eq!((c.new_cost, c.cost_delta(), c.unpriced_delta()), (PicoUsd(0), PicoUsd(-7), 1));
    }

    #[test]
    fn chunks_are_bounded_ordered_and_named_by_content() {
        let table = PriceTable::from_toml(TABLE, "test").unwrap();
        let corrections: Vec<Correction> =
            (0..7).rev().filter_map(|i| correct(&attempt(i, "m1", 10, 0, ""), &table)).collect();
        let cut = chunks(corrections.clone(), 3);
        assert_eq!(cut.iter().map(|c| c.corrections.len()).collect::<Vec<_>>(), [3, 3, 1]);
        let offsets: Vec<u64> = cut.iter().flat_map(|c| c.corrections.iter().map(|c| c.attempt.kafka_offset)).collect();
        assert_eq!(offsets, (0..7).collect::<Vec<_>>());
        assert_eq!(cut, chunks(corrections.clone(), 3), "same corrections, same chunks");
        let ids: std::collections::HashSet<&str> = cut.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids.len(), 3);
        let mut changed = corrections;
        changed[0].new_cost.0 += 1;
        assert_ne!(chunks(changed, 3).last().unwrap().id, cut.last().unwrap().id);
        assert_eq!(chunks(Vec::new(), 3), Vec::new());
    }

    #[test]
    fn rollup_corrections_and_model_changes_add_up() {
        let table = PriceTable::from_toml(TABLE, "test").unwrap();
        let attempts = [attempt(1, "m1", 10, 0, ""), attempt(2, "m1", 10, 10, "t1:x"), attempt(3, "m1", 181, 0, "")];
        let corrections: Vec<Correction> = attempts.iter().filter_map(|a| correct(a, &table)).collect();
        let rollups = rollup_corrections(&corrections);
        assert_eq!(rollups.len(), 2);
        let day10 = rollups.values().next().unwrap();
        assert_eq!(day10.cost, PicoUsd(2 * 3_000_000_000 - 10));
        assert_eq!(day10.unpriced_attempts, -1);
        let total: i128 = rollups.values().map(|r| r.cost.0).sum();
        let deltas: i128 = corrections.iter().map(|c| c.cost_delta().0).sum();
        assert_eq!(total, deltas);
        let by_model = changes_by_model(&corrections);
        let m1 = &by_model[&("acme".to_string(), "m1".to_string())];
        assert_eq!((m1.attempts, m1.cost_before, m1.priced_before, m1.priced_after), (3, PicoUsd(10), 1, 3));
        assert_eq!(m1.cost_after, PicoUsd(2 * 3_000_000_000 + 1_140_000_000));
    }
}
