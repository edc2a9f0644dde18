//! Minute rollups: counted attempts and duplicates summed per event-time minute and dimension
//! set. A `MinuteRollup` holds the deltas of one partition since its last flush; ClickHouse
//! adds the partial rows of every flush and every worker, so late events simply add to the
//! window they belong to.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::event::{DataMode, UsageEvent};
use crate::latency::LatencyHistogram;
use crate::money::PicoUsd;
use crate::price::Pricing;
use crate::symbols::Symbols;

/// The dimensions of SPEC §3 plus the window. The text dimensions are ids in the batch's
/// [`Symbols`], so a key is 32 bytes, hashes and compares as integers, and owns no string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupKey {
    /// Start of the event-time minute, epoch seconds (UTC).
    pub window_start_secs: u32,
    /// Symbol ids of tenant, endpoint tag, prompt version, provider, model and environment
    /// (the first six [`Dimension`]s, in that order).
    pub text: [u32; 6],
    pub data_mode: DataMode,
}

/// Every field, as four words (the derived hash feeds nine values and the array's length).
impl std::hash::Hash for RollupKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let [tenant, tag, version, provider, model, environment] = self.text.map(u64::from);
        state.write_u64(u64::from(self.window_start_secs) | tenant << 32);
        state.write_u64(tag | version << 32);
        state.write_u64(provider | model << 32);
        state.write_u64(environment | (self.data_mode as u64) << 32);
    }
}

/// Epoch seconds of the start of the minute holding `time_ms` (event times are ≥ 0).
pub fn minute_start_secs(time_ms: i64) -> u32 {
    ((time_ms.max(0) / 60_000) * 60) as u32
}

/// The measures of SPEC §3 for one key. `retries` is `attempts − requests`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollupMeasures {
    pub requests: u64,
    pub attempts: u64,
    pub duplicates: u64,
    pub successes: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub output_tokens: u64,
    pub cost: PicoUsd,
    pub unpriced_attempts: u64,
    pub latency_ms_sum: u64,
    pub latency_ms_max: u32,
    pub latency: LatencyHistogram,
}

impl RollupMeasures {
    pub fn retries(&self) -> u64 {
        self.attempts - self.requests
    }

    /// Adds one counted attempt of `event`, priced at `cost`.
    pub fn add_attempt<S: AsRef<str>>(
        &mut self,
        event: &UsageEvent<S>,
        cost: PicoUsd,
        pricing: &Pricing,
        first_of_request: bool,
    ) {
        self.requests += u64::from(first_of_request);
        self.attempts += 1;
        if event.is_success() {
            self.successes += 1;
        } else {
            self.errors += 1;
        }
        self.input_tokens += event.input_tokens;
        self.cached_input_tokens += event.cached_input_tokens;
        self.cache_write_tokens += event.cache_write_tokens;
        self.cache_write_1h_tokens += event.cache_write_1h_tokens;
        self.output_tokens += event.output_tokens;
        self.cost += cost;
        self.unpriced_attempts += u64::from(*pricing == Pricing::Unpriced);
        if let Some(ms) = event.latency_ms {
            self.latency_ms_sum += u64::from(ms);
            self.latency_ms_max = self.latency_ms_max.max(ms);
            self.latency.record(ms);
        }
    }
}

/// One of a [`RollupKey`]'s dimensions (the window start aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dimension {
    #[default]
    Tenant,
    EndpointTag,
    PromptVersion,
    Provider,
    Model,
    Environment,
    DataMode,
}

impl RollupKey {
    /// The key of the window `event` falls into; its strings get their ids in `symbols`. The
    /// environment, which most events share with the one before, goes through its dimension's
    /// slot (5); the other dimensions vary from event to event, where a slot only adds a
    /// comparison.
    fn of<S: AsRef<str>>(event: &UsageEvent<S>, event_time_ms: i64, symbols: &mut Symbols) -> RollupKey {
        RollupKey {
            window_start_secs: minute_start_secs(event_time_ms),
            text: [
                symbols.id(event.user_id.as_ref()),
                symbols.id(event.endpoint_tag.as_ref()),
                symbols.id(event.prompt_version.as_ref()),
                symbols.id(event.provider.as_ref()),
                symbols.id(event.model.as_ref()),
                symbols.id_in(Dimension::Environment as usize, event.environment.as_ref()),
            ],
            data_mode: event.data_mode,
        }
    }

    /// The symbol id of a text dimension; `None` for the data mode.
    pub fn text_id(&self, dimension: Dimension) -> Option<u32> {
        match dimension {
            Dimension::DataMode => None,
            text => Some(self.text[text as usize]),
        }
    }

    /// The symbol ids of the provider and the model, which name a price table's rows.
    pub fn provider_and_model(&self) -> [u32; 2] {
        [self.text[Dimension::Provider as usize], self.text[Dimension::Model as usize]]
    }

    /// One dimension's text; `names` are the batch's symbols ([`Symbols::names`]).
    pub fn dimension<'a>(&self, dimension: Dimension, names: &'a [Arc<str>]) -> &'a str {
        match self.text_id(dimension) {
            None => self.data_mode.as_str(),
            Some(id) => names.get(id as usize).map_or("", |name| name),
        }
    }
}

/// Per-minute, per-dimension deltas. Windows are numbered in order of creation; a counted
/// attempt keeps its window's number instead of a copy of the dimensions.
#[derive(Debug, Clone, Default)]
pub struct MinuteRollup {
    /// Numbers of `windows`, found by the hash of their key.
    table: HashTable<u32>,
    windows: Vec<(RollupKey, RollupMeasures)>,
    hasher: DefaultHashBuilder,
}

impl MinuteRollup {
    pub fn with_capacity(keys: usize) -> MinuteRollup {
        MinuteRollup {
            table: HashTable::with_capacity(keys),
            windows: Vec::with_capacity(keys),
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// The number and measures of the window `event` falls into, created empty on first use.
    pub fn window<S: AsRef<str>>(
        &mut self,
        event: &UsageEvent<S>,
        event_time_ms: i64,
        symbols: &mut Symbols,
    ) -> (u32, &RollupKey, &mut RollupMeasures) {
        let key = RollupKey::of(event, event_time_ms, symbols);
        let hash = self.hasher.hash_one(key);
        let windows = &self.windows;
        let number = match self.table.find(hash, |&i| windows[i as usize].0 == key) {
            Some(&number) => number,
            None => {
                let number = self.windows.len() as u32;
                self.windows.push((key, RollupMeasures::default()));
                let (windows, hasher) = (&self.windows, &self.hasher);
                self.table.insert_unique(hash, number, |&i| hasher.hash_one(windows[i as usize].0));
                number
            }
        };
        let (key, measures) = &mut self.windows[number as usize];
        (number, key, measures)
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// The windows in order of their numbers.
    pub fn iter(&self) -> impl Iterator<Item = (&RollupKey, &RollupMeasures)> {
        self.windows.iter().map(|(key, measures)| (key, measures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn event(tenant: &str, model: &str) -> UsageEvent<Cow<'static, str>> {
        let text = |s: &str| Cow::Owned(s.to_string());
        UsageEvent {
            external_request_id: text("r"),
            provider: text("openai"),
            model: text(model),
            endpoint_tag: text("checkout.summary"),
            prompt_version: text("v1"),
            user_id: text(tenant),
            input_tokens: 1,
            output_tokens: 1,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            latency_ms: None,
            status: text("success"),
            data_mode: DataMode::Test,
            environment: text("prod"),
            attempt: 1,
            timestamp_ms: None,
            cost_usd: None,
            error_code: text(""),
        }
    }

    #[test]
    fn windows_are_numbered_in_order_of_creation_and_found_again() {
        let (mut rollup, mut symbols) = (MinuteRollup::with_capacity(1), Symbols::default());
        let minute = 1_746_093_600_000;
        let mut numbers = Vec::new();
        // Enough distinct keys to make the table grow (and rehash) several times.
        for round in 0..2 {
            for tenant in 0..200 {
                let (number, _, measures) =
                    rollup.window(&event(&format!("t{tenant}"), "gpt-4o"), minute + round, &mut symbols);
                measures.attempts += 1;
                numbers.push(number);
            }
        }
        let (later_minute, ..) = rollup.window(&event("t0", "gpt-4o"), minute + 60_000, &mut symbols);
        let (other_model, key, _) = rollup.window(&event("t0", "o3"), minute, &mut symbols);
        let [provider, model] = key.provider_and_model();
        assert_eq!((&*symbols.names()[provider as usize], &*symbols.names()[model as usize]), ("openai", "o3"));
        assert_eq!(&numbers[..200], (0..200).collect::<Vec<u32>>());
        assert_eq!(numbers[200..], numbers[..200]);
        assert_eq!((later_minute, other_model, rollup.len()), (200, 201, 202));
        let names = symbols.names();
        let (key, measures) = rollup.iter().nth(7).unwrap();
        assert_eq!((key.dimension(Dimension::Tenant, names), measures.attempts), ("t7", 2));
        assert_eq!(
            (key.dimension(Dimension::DataMode, names), key.dimension(Dimension::Model, names)),
            ("test", "gpt-4o")
        );
        assert_eq!(key.dimension(Dimension::EndpointTag, names), "checkout.summary");
        assert_eq!(key.dimension(Dimension::PromptVersion, names), "v1");
        assert_eq!(key.dimension(Dimension::Provider, names), "openai");
        assert_eq!(key.dimension(Dimension::Environment, names), "prod");
        assert_eq!(rollup.iter().nth(201).unwrap().0.dimension(Dimension::Model, names), "o3");
    }
}
