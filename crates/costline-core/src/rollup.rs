//! Minute rollups: counted attempts and duplicates summed per event-time minute and dimension
//! set. A `MinuteRollup` holds the deltas of one partition since its last flush; ClickHouse
//! adds the partial rows of every flush and every worker, so late events simply add to the
//! window they belong to.

use hashbrown::{Equivalent, HashMap};

use crate::batch::CountedAttempt;
use crate::event::{DataMode, UsageEvent};
use crate::latency::LatencyHistogram;
use crate::money::PicoUsd;
use crate::price::Pricing;

/// The dimensions of SPEC §3 plus the window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RollupKey {
    /// Start of the event-time minute, epoch seconds (UTC).
    pub window_start_secs: u32,
    pub tenant: String,
    pub endpoint_tag: String,
    pub prompt_version: String,
    pub provider: String,
    pub model: String,
    pub environment: String,
    pub data_mode: DataMode,
}

/// A borrowed view of a [`RollupKey`], hashing identically, so that looking up an existing
/// window allocates nothing.
#[derive(Hash)]
struct RollupKeyRef<'a> {
    window_start_secs: u32,
    tenant: &'a str,
    endpoint_tag: &'a str,
    prompt_version: &'a str,
    provider: &'a str,
    model: &'a str,
    environment: &'a str,
    data_mode: DataMode,
}

impl<'a> RollupKeyRef<'a> {
    fn of(event: &'a UsageEvent, event_time_ms: i64) -> Self {
        RollupKeyRef {
            window_start_secs: minute_start_secs(event_time_ms),
            tenant: &event.user_id,
            endpoint_tag: &event.endpoint_tag,
            prompt_version: &event.prompt_version,
            provider: &event.provider,
            model: &event.model,
            environment: &event.environment,
            data_mode: event.data_mode,
        }
    }

    fn to_owned(&self) -> RollupKey {
        RollupKey {
            window_start_secs: self.window_start_secs,
            tenant: self.tenant.to_owned(),
            endpoint_tag: self.endpoint_tag.to_owned(),
            prompt_version: self.prompt_version.to_owned(),
            provider: self.provider.to_owned(),
            model: self.model.to_owned(),
            environment: self.environment.to_owned(),
            data_mode: self.data_mode,
        }
    }
}

impl Equivalent<RollupKey> for RollupKeyRef<'_> {
    fn equivalent(&self, key: &RollupKey) -> bool {
        self.window_start_secs == key.window_start_secs
            && self.tenant == key.tenant
            && self.endpoint_tag == key.endpoint_tag
            && self.prompt_version == key.prompt_version
            && self.provider == key.provider
            && self.model == key.model
            && self.environment == key.environment
            && self.data_mode == key.data_mode
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

    fn add_attempt(&mut self, attempt: &CountedAttempt) {
        let event = &attempt.event;
        self.requests += u64::from(attempt.first_of_request);
        self.attempts += 1;
        if event.is_success() {
            self.successes += 1;
        } else {
            self.errors += 1;
        }
        self.input_tokens += event.input_tokens;
        self.cached_input_tokens += event.cached_input_tokens;
        self.cache_write_tokens += event.cache_write_tokens;
        self.output_tokens += event.output_tokens;
        self.cost += attempt.cost;
        self.unpriced_attempts += u64::from(attempt.pricing == Pricing::Unpriced);
        if let Some(ms) = event.latency_ms {
            self.latency_ms_sum += u64::from(ms);
            self.latency_ms_max = self.latency_ms_max.max(ms);
            self.latency.record(ms);
        }
    }

    /// Adds another partial of the same key.
    pub fn merge(&mut self, other: &RollupMeasures) {
        self.requests += other.requests;
        self.attempts += other.attempts;
        self.duplicates += other.duplicates;
        self.successes += other.successes;
        self.errors += other.errors;
        self.input_tokens += other.input_tokens;
        self.cached_input_tokens += other.cached_input_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.output_tokens += other.output_tokens;
        self.cost += other.cost;
        self.unpriced_attempts += other.unpriced_attempts;
        self.latency_ms_sum += other.latency_ms_sum;
        self.latency_ms_max = self.latency_ms_max.max(other.latency_ms_max);
        self.latency.merge(&other.latency);
    }
}

/// Per-minute, per-dimension deltas.
#[derive(Debug, Clone, Default)]
pub struct MinuteRollup {
    windows: HashMap<RollupKey, RollupMeasures>,
}

impl MinuteRollup {
    fn measures(&mut self, event: &UsageEvent, event_time_ms: i64) -> &mut RollupMeasures {
        let key = RollupKeyRef::of(event, event_time_ms);
        // Two lookups on the rare miss keep the common hit free of allocation.
        if !self.windows.contains_key(&key) {
            self.windows.insert(key.to_owned(), RollupMeasures::default());
        }
        self.windows.get_mut(&key).expect("inserted just above")
    }

    pub fn add_attempt(&mut self, attempt: &CountedAttempt) {
        self.measures(&attempt.event, attempt.event_time_ms).add_attempt(attempt);
    }

    pub fn add_duplicate(&mut self, event: &UsageEvent, event_time_ms: i64) {
        self.measures(event, event_time_ms).duplicates += 1;
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&RollupKey, &RollupMeasures)> {
        self.windows.iter()
    }

    /// Adds every window of `other` into this one.
    pub fn merge(&mut self, other: &MinuteRollup) {
        for (key, measures) in &other.windows {
            self.windows.entry(key.clone()).or_default().merge(measures);
        }
    }
}
