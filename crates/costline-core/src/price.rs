//! The versioned price table: USD per million tokens per provider and model, each row in force
//! from a date. A counted attempt keeps the cost and the version string of the row that priced
//! it, so a later price change never rewrites history.
//!
//! Layout: `provider → model → rows sorted by effective_from`. A model id with a date suffix
//! (`claude-sonnet-4-5-20250929`, `gpt-4o-2024-08-06`) that has no row of its own is priced by
//! the row of the id without the suffix.
//!
//! Finding a model's rows hashes its provider and model names, the model's twice when it is a
//! dated id. A counter meets the same few dozen models over and over, and has given their
//! names symbol ids already (for the rollup key), so [`PriceCache`] keeps each model's rows by
//! those ids and pricing an event hashes nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hashbrown::HashMap;

use serde::Deserialize;

use crate::event::UsageEvent;
use crate::money::{AmountError, PicoUsd};

/// Per-token prices, in pico-USD per token (= micro-USD per million tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rates {
    pub input: i128,
    pub cached_input: i128,
    pub cache_write: i128,
    pub cache_write_1h: i128,
    pub output: i128,
    /// `<table version>:<provider>/<model>@<effective_from>` (and `>N` for the tier above N
    /// input tokens), stored with every attempt these rates priced.
    pub version: Arc<str>,
}

impl Rates {
    /// `(input − cached − cache_write − cache_write_1h) × in + cached × cache_read
    /// + cache_write × write + cache_write_1h × write_1h + output × out`.
    pub fn cost<S>(&self, event: &UsageEvent<S>) -> PicoUsd {
        let uncached =
            event.input_tokens - event.cached_input_tokens - event.cache_write_tokens - event.cache_write_1h_tokens;
        PicoUsd(
            i128::from(uncached) * self.input
                + i128::from(event.cached_input_tokens) * self.cached_input
                + i128::from(event.cache_write_tokens) * self.cache_write
                + i128::from(event.cache_write_1h_tokens) * self.cache_write_1h
                + i128::from(event.output_tokens) * self.output,
        )
    }
}

/// One row of the table: the rates in force from a date, and its prompt-length tiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub effective_from_ms: i64,
    /// The rates of prompts up to the first tier's threshold.
    pub base: Rates,
    /// `(above_input_tokens, rates)`, thresholds ascending. Providers bill a long prompt's
    /// every token at the long-context rates, so the highest tier whose threshold an attempt's
    /// `inputTokens` exceed prices the whole attempt.
    pub tiers: Vec<(u64, Rates)>,
}

impl Price {
    /// The rates that price an attempt with `input_tokens` prompt tokens.
    pub fn rates_for(&self, input_tokens: u64) -> &Rates {
        self.tiers.iter().rev().find(|(above, _)| input_tokens > *above).map_or(&self.base, |(_, rates)| rates)
    }

    /// The cost of one attempt at this row's rates.
    pub fn cost<S>(&self, event: &UsageEvent<S>) -> PicoUsd {
        self.rates_for(event.input_tokens).cost(event)
    }
}

/// How an attempt's cost was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pricing {
    /// The producer sent `costUsd`.
    Reported,
    /// A price-table row; the version string names it.
    Table(Arc<str>),
    /// No row for this provider and model at the event's time: cost 0, counted as unpriced.
    Unpriced,
}

impl Pricing {
    /// What `usage_events.price_version` holds.
    pub fn version(&self) -> &str {
        match self {
            Pricing::Reported => "reported",
            Pricing::Table(version) => version,
            Pricing::Unpriced => "",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PriceTableError {
    #[error("{source_name}: {message}")]
    Parse { source_name: String, message: String },
    #[error("{source_name}: price[{index}] ({provider}/{model}) `{key}` {problem}")]
    Row { source_name: String, index: usize, provider: String, model: String, key: &'static str, problem: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    version: String,
    #[serde(default)]
    price: Vec<PriceRow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceRow {
    provider: String,
    model: String,
    effective_from: String,
    input: String,
    cached_input: Option<String>,
    cache_write: Option<String>,
    cache_write_1h: Option<String>,
    output: String,
    /// Prompt-length tiers (`[[price.tier]]`).
    #[serde(default)]
    tier: Vec<TierRow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TierRow {
    /// The tier prices attempts with more input tokens than this.
    above_input_tokens: u64,
    input: String,
    cached_input: Option<String>,
    cache_write: Option<String>,
    cache_write_1h: Option<String>,
    output: String,
}

/// A row's or a tier's prices as written: decimal USD per million tokens.
struct RateTexts<'a> {
    input: &'a str,
    cached_input: Option<&'a str>,
    cache_write: Option<&'a str>,
    cache_write_1h: Option<&'a str>,
    output: &'a str,
}

impl PriceRow {
    fn rates(&self) -> RateTexts<'_> {
        RateTexts {
            input: &self.input,
            cached_input: self.cached_input.as_deref(),
            cache_write: self.cache_write.as_deref(),
            cache_write_1h: self.cache_write_1h.as_deref(),
            output: &self.output,
        }
    }
}

impl TierRow {
    fn rates(&self) -> RateTexts<'_> {
        RateTexts {
            input: &self.input,
            cached_input: self.cached_input.as_deref(),
            cache_write: self.cache_write.as_deref(),
            cache_write_1h: self.cache_write_1h.as_deref(),
            output: &self.output,
        }
    }
}

/// All price rows, ready for lookup.
#[derive(Debug, Clone)]
pub struct PriceTable {
    /// Where in `rows` the rows of each provider and model are.
    index: HashMap<String, HashMap<String, RowsId>>,
    /// Each model's rows, sorted by `effective_from_ms`.
    rows: Vec<Vec<Price>>,
    /// Names these contents for [`PriceCache`]: new for every table and every change.
    edition: u64,
}

/// One model's rows in a [`PriceTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RowsId(u32);

impl Default for PriceTable {
    fn default() -> PriceTable {
        PriceTable { index: HashMap::new(), rows: Vec::new(), edition: next_edition() }
    }
}

fn next_edition() -> u64 {
    static EDITIONS: AtomicU64 = AtomicU64::new(1);
    EDITIONS.fetch_add(1, Ordering::Relaxed)
}

impl PriceTable {
    /// Parses a price file (TOML, see `schemas/prices.toml`). `source_name` appears in errors.
    pub fn from_toml(text: &str, source_name: &str) -> Result<PriceTable, PriceTableError> {
        let mut table = PriceTable::default();
        table.merge_toml(text, source_name)?;
        Ok(table)
    }

    /// Adds the rows of another price file: a row with the same provider, model and
    /// effective date replaces the existing one, others are added.
    pub fn merge_toml(&mut self, text: &str, source_name: &str) -> Result<(), PriceTableError> {
        let file: PriceFile = toml::from_str(text)
            .map_err(|e| PriceTableError::Parse { source_name: source_name.to_string(), message: e.to_string() })?;
        for (index, row) in file.price.into_iter().enumerate() {
            let provider = row.provider.to_lowercase();
            let row_error = |key: &'static str, problem: String| PriceTableError::Row {
                source_name: source_name.to_string(),
                index,
                provider: provider.clone(),
                model: row.model.clone(),
                key,
                problem,
            };
            let effective_from_ms = chrono::NaiveDate::parse_from_str(&row.effective_from, "%Y-%m-%d")
                .map_err(|e| row_error("effective_from", format!("is not a YYYY-MM-DD date ({e})")))?
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc().timestamp_millis())
                .ok_or_else(|| row_error("effective_from", "is out of range".into()))?;
            let version = format!("{}:{}/{}@{}", file.version, provider, row.model, row.effective_from);
            let rates = |texts: RateTexts, version: String| -> Result<Rates, PriceTableError> {
                let per_token = |key: &'static str, text: &str| {
                    PicoUsd::parse_scaled(text, 6, false).map_err(|e: AmountError| row_error(key, e.to_string()))
                };
                let input = per_token("input", texts.input)?;
                let or_input = |key, text: Option<&str>| {
                    text.map(|t| per_token(key, t)).transpose().map(|price| price.unwrap_or(input))
                };
                let cache_write = or_input("cache_write", texts.cache_write)?;
                Ok(Rates {
                    input,
                    cached_input: or_input("cached_input", texts.cached_input)?,
                    cache_write,
                    // A missing 1-hour price is the cache-write price (itself the input's).
                    cache_write_1h: texts
                        .cache_write_1h
                        .map(|t| per_token("cache_write_1h", t))
                        .transpose()?
                        .unwrap_or(cache_write),
                    output: per_token("output", texts.output)?,
                    version: version.into(),
                })
            };
            let mut tiers = Vec::with_capacity(row.tier.len());
            for tier in &row.tier {
                if tiers.last().is_some_and(|&(above, _)| above >= tier.above_input_tokens) {
                    return Err(row_error("tier", "thresholds must be given in increasing order, each once".into()));
                }
                let tier_version = format!("{version}>{}", tier.above_input_tokens);
                tiers.push((tier.above_input_tokens, rates(tier.rates(), tier_version)?));
            }
            let price = Price { effective_from_ms, base: rates(row.rates(), version)?, tiers };
            let next_id = RowsId(self.rows.len() as u32);
            let id = *self.index.entry(provider.clone()).or_default().entry(row.model.clone()).or_insert(next_id);
            if id == next_id {
                self.rows.push(Vec::new());
            }
            let rows = &mut self.rows[id.0 as usize];
            rows.retain(|existing| existing.effective_from_ms != effective_from_ms);
            rows.push(price);
            rows.sort_by_key(|p| p.effective_from_ms);
        }
        self.edition = next_edition();
        Ok(())
    }

    /// The row in force for `provider`/`model` at `at_ms`, if any.
    pub fn price_at(&self, provider: &str, model: &str, at_ms: i64) -> Option<&Price> {
        self.row_in_force(self.rows_of(provider, model)?, at_ms)
    }

    /// The cost of one attempt and how it was found.
    pub fn price<S: AsRef<str>>(&self, event: &UsageEvent<S>, event_time_ms: i64) -> (PicoUsd, Pricing) {
        self.priced(self.rows_of(event.provider.as_ref(), event.model.as_ref()), event, event_time_ms)
    }

    /// Number of (provider, model) pairs with at least one row.
    pub fn model_count(&self) -> usize {
        self.index.values().map(HashMap::len).sum()
    }

    fn rows_of(&self, provider: &str, model: &str) -> Option<RowsId> {
        let models = self.index.get(provider)?;
        models.get(model).or_else(|| models.get(strip_date_suffix(model)?)).copied()
    }

    fn row_in_force(&self, rows: RowsId, at_ms: i64) -> Option<&Price> {
        self.rows.get(rows.0 as usize)?.iter().rev().find(|p| p.effective_from_ms <= at_ms)
    }

    /// The cost of an attempt: the one its producer reported, else from its model's rows.
    fn priced<S>(&self, rows: Option<RowsId>, event: &UsageEvent<S>, event_time_ms: i64) -> (PicoUsd, Pricing) {
        if let Some(reported) = event.cost_usd {
            return (reported, Pricing::Reported);
        }
        match rows.and_then(|rows| self.row_in_force(rows, event_time_ms)) {
            Some(price) => {
                let rates = price.rates_for(event.input_tokens);
                (rates.cost(event), Pricing::Table(rates.version.clone()))
            }
            None => (PicoUsd::ZERO, Pricing::Unpriced),
        }
    }
}

/// Each model's rows in a [`PriceTable`], by symbol ids that the caller gives the provider and
/// model names, which must name the same texts until [`PriceCache::clear`] (one batch's
/// [`crate::Symbols`]). Prices what [`PriceTable::price`] prices, the same.
#[derive(Debug, Clone, Default)]
pub struct PriceCache {
    /// The [`PriceTable::edition`] the entries come from.
    edition: u64,
    /// By model id: the provider id it was met with and that pair's rows.
    by_model: Vec<Option<(u32, Option<RowsId>)>>,
}

impl PriceCache {
    /// [`PriceTable::price`] of `event`, whose provider and model have the ids `provider_id` and
    /// `model_id`.
    pub fn price<S: AsRef<str>>(
        &mut self,
        table: &PriceTable,
        event: &UsageEvent<S>,
        [provider_id, model_id]: [u32; 2],
        event_time_ms: i64,
    ) -> (PicoUsd, Pricing) {
        if self.edition != table.edition {
            self.by_model.clear();
            self.edition = table.edition;
        }
        let slot = model_id as usize;
        let rows = match self.by_model.get(slot) {
            Some(&Some((provider, rows))) if provider == provider_id => rows,
            _ => {
                let rows = table.rows_of(event.provider.as_ref(), event.model.as_ref());
                if self.by_model.len() <= slot {
                    self.by_model.resize(slot + 1, None);
                }
                self.by_model[slot] = Some((provider_id, rows));
                rows
            }
        };
        table.priced(rows, event, event_time_ms)
    }

    /// Forgets every entry: the ids are about to name other texts.
    pub fn clear(&mut self) {
        self.by_model.clear();
    }
}

/// `name-20250929` or `name-2024-08-06` → `name`: the id whose rows price a dated snapshot
/// that has none of its own.
pub fn strip_date_suffix(model: &str) -> Option<&str> {
    let is_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let bytes = model.as_bytes();
    if model.len() > 9 && bytes[model.len() - 9] == b'-' && is_digits(&model[model.len() - 8..]) {
        return Some(&model[..model.len() - 9]);
    }
    if model.len() > 11 {
        let (head, date) = model.split_at(model.len() - 11);
        let d = date.as_bytes();
        if d[0] == b'-'
            && d[5] == b'-'
            && d[8] == b'-'
            && is_digits(&date[1..5])
            && is_digits(&date[6..8])
            && is_digits(&date[9..])
        {
            return Some(head);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DataMode;

    const TABLE: &str = r#"
        version = "t1"
        [[price]]
        provider = "OpenAI"
        model = "gpt-4o"
        effective_from = "2024-01-01"
        input = "5.00"
        output = "15.00"
        [[price]]
        provider = "openai"
        model = "gpt-4o"
        effective_from = "2024-10-01"
        input = "2.50"
        cached_input = "1.25"
        output = "10.00"
        [[price]]
        provider = "anthropic"
        model = "claude-sonnet-4-5"
        effective_from = "2025-09-29"
        input = "3"
        cached_input = "0.30"
        cache_write = "3.75"
        cache_write_1h = "6"
        output = "15"
    "#;

    fn event<'a>(provider: &'a str, model: &'a str) -> UsageEvent<&'a str> {
        UsageEvent {
            external_request_id: "r",
            provider,
            model,
            endpoint_tag: "e",
            prompt_version: "",
            user_id: "",
            input_tokens: 1000,
            output_tokens: 200,
            cached_input_tokens: 300,
            cache_write_tokens: 100,
            cache_write_1h_tokens: 50,
            latency_ms: None,
            status: "success",
            data_mode: DataMode::Real,
            environment: "prod",
            attempt: 1,
            timestamp_ms: None,
            cost_usd: None,
            error_code: "",
        }
    }

    const OCT_2025: i64 = 1_760_000_000_000;

    #[test]
    fn uses_the_row_in_force_at_event_time() {
        let table = PriceTable::from_toml(TABLE, "test").unwrap();
        let e = event("openai", "gpt-4o");
        // 2024-06: old price, no cache price → cached tokens at input price.
        let (cost, pricing) = table.price(&e, 1_717_200_000_000);
        assert_eq!(cost, PicoUsd(1000 * 5_000_000 + 200 * 15_000_000));
        assert_eq!(pricing, Pricing::Table("t1:openai/gpt-4o@2024-01-01".into()));
        let (cost, _) = table.price(&e, OCT_2025);
        // No cache-write prices: both kinds of writes at the input price.
        assert_eq!(cost, PicoUsd(550 * 2_500_000 + 300 * 1_250_000 + 150 * 2_500_000 + 200 * 10_000_000));
    }

    #[test]
    fn cache_write_price_and_dated_model_ids() {
        let table = PriceTable::from_toml(TABLE, "test").unwrap();
        let e = event("anthropic", "claude-sonnet-4-5-20250929");
        let (cost, _) = table.price(&e, OCT_2025);
        let want = 550 * 3_000_000 + 300 * 300_000 + 100 * 3_750_000 + 50 * 6_000_000 + 200 * 15_000_000;
        assert_eq!(cost, PicoUsd(want));
        // Without a 1-hour price, 1-hour writes cost the cache-write price.
        let table = PriceTable::from_toml(&TABLE.replace("cache_write_1h = \"6\"\n", ""), "test").unwrap();
        let (cost, _) = table.price(&e, OCT_2025);
        assert_eq!(cost, PicoUsd(want - 50 * 6_000_000 + 50 * 3_750_000));
    }

    #[test]
    fn unpriced_and_reported() {
        let table = PriceTable::from_toml(TABLE, "test").unwrap();
        assert_eq!(table.price(&event("openai", "gpt-4o"), 0), (PicoUsd::ZERO, Pricing::Unpriced));
        assert_eq!(table.price(&event("mistral", "x"), OCT_2025).1, Pricing::Unpriced);
        let mut e = event("mistral", "x");
        e.cost_usd = Some(PicoUsd(42));
        assert_eq!(table.price(&e, OCT_2025), (PicoUsd(42), Pricing::Reported));
    }

    #[test]
    fn overrides_replace_same_date_and_add_new() {
        let mut table = PriceTable::from_toml(TABLE, "test").unwrap();
        table
            .merge_toml(
                "version = \"mine\"\n[[price]]\nprovider=\"openai\"\nmodel=\"gpt-4o\"\neffective_from=\"2024-10-01\"\ninput=\"1\"\noutput=\"2\"\n",
                "override",
            )
            .unwrap();
        let price = table.price_at("openai", "gpt-4o", OCT_2025).unwrap();
        assert_eq!((price.base.input, price.base.output), (1_000_000, 2_000_000));
        assert_eq!(&*price.base.version, "mine:openai/gpt-4o@2024-10-01");
        assert_eq!(table.model_count(), 2);
    }

    #[test]
    fn bad_rows_name_the_key() {
        let err = PriceTable::from_toml(
            "version=\"v\"\n[[price]]\nprovider=\"a\"\nmodel=\"m\"\neffective_from=\"2024-01-01\"\ninput=\"0.0000001\"\noutput=\"1\"\n",
            "prices.toml",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "prices.toml: price[0] (a/m) `input` has more than 6 digits after the decimal point"
        );
        let err = PriceTable::from_toml("version=\"v\"\nbogus=1\n", "p.toml").unwrap_err();
        assert!(err.to_string().contains("unknown field `bogus`"), "{err}");
    }

    #[test]
    fn the_cache_prices_as_the_table_does() {
        let table = PriceTable::from_toml(TABLE, "test").unwrap();
        let mut symbols = crate::Symbols::default();
        let mut cache = PriceCache::default();
        let mut reported = event("openai", "gpt-4o");
        reported.cost_usd = Some(PicoUsd(7));
        let events = [
            event("openai", "gpt-4o"),
            event("anthropic", "claude-sonnet-4-5-20250929"),
            event("anthropic", "claude-sonnet-4-5"),
            event("mistral", "x"),
            // The same model name under another provider: met with another provider id.
            event("anthropic", "gpt-4o"),
            event("openai", "gpt-4o"),
            reported,
        ];
        for at_ms in [0, 1_717_200_000_000, OCT_2025] {
            for e in events.iter().chain(events.iter().rev()) {
                let ids = [symbols.id(e.provider), symbols.id(e.model)];
                assert_eq!(cache.price(&table, e, ids, at_ms), table.price(e, at_ms), "{}/{}", e.provider, e.model);
            }
        }
        // Another table is asked again: its rows are not where the remembered ones were.
        let mut changed =
            PriceTable::from_toml(&TABLE.replace("OpenAI", "openai").replace("openai", "other"), "test").unwrap();
        changed
            .merge_toml(
                "version = \"v2\"\n[[price]]\nprovider=\"openai\"\nmodel=\"gpt-4o\"\neffective_from=\"2024-10-01\"\ninput=\"1\"\noutput=\"2\"\n",
                "override",
            )
            .unwrap();
        let e = event("openai", "gpt-4o");
        let ids = [symbols.id(e.provider), symbols.id(e.model)];
        assert_ne!(changed.price(&e, OCT_2025), table.price(&e, OCT_2025));
        assert_eq!(cache.price(&changed, &e, ids, OCT_2025), changed.price(&e, OCT_2025));
        // Once cleared, ids may name other texts.
        cache.clear();
        let other = event("anthropic", "claude-sonnet-4-5");
        assert_eq!(cache.price(&changed, &other, ids, OCT_2025), changed.price(&other, OCT_2025));
    }

    #[test]
    fn strips_date_suffixes_only() {
        assert_eq!(strip_date_suffix("gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(strip_date_suffix("claude-3-5-haiku-20241022"), Some("claude-3-5-haiku"));
        assert_eq!(strip_date_suffix("gpt-4o"), None);
        assert_eq!(strip_date_suffix("mistral-large-2411"), None);
    }

    const TIERED: &str = r#"
        version = "t2"
        [[price]]
        provider = "google"
        model = "gemini-2.5-pro"
        effective_from = "2025-06-17"
        input = "1.25"
        cached_input = "0.125"
        output = "10"
        [[price.tier]]
        above_input_tokens = 200000
        input = "2.50"
        cached_input = "0.25"
        cache_write = "3.125"
        cache_write_1h = "5"
        output = "15"
        [[price.tier]]
        above_input_tokens = 1000000
        input = "5"
        cache_write = "6.25"
        output = "20"
    "#;

    /// USD per million tokens as decimal text → pico-USD per token, computed here on its own.
    fn pico_per_token(usd_per_million: &str) -> i128 {
        let (int, frac) = usd_per_million.split_once('.').unwrap_or((usd_per_million, ""));
        let frac = format!("{frac:0<6}");
        int.parse::<i128>().unwrap() * 1_000_000 + frac.parse::<i128>().unwrap()
    }

    #[test]
    fn a_tier_prices_the_whole_attempt_once_its_threshold_is_passed() {
        let table = PriceTable::from_toml(TIERED, "test").unwrap();
        let mut e = event("google", "gemini-2.5-pro");
        (e.cache_write_tokens, e.cache_write_1h_tokens) = (0, 0);
        let cases: [(u64, [&str; 3], &str); 6] = [
            (200_000 - 1, ["1.25", "0.125", "10"], "t2:google/gemini-2.5-pro@2025-06-17"),
            (200_000, ["1.25", "0.125", "10"], "t2:google/gemini-2.5-pro@2025-06-17"),
            (200_001, ["2.50", "0.25", "15"], "t2:google/gemini-2.5-pro@2025-06-17>200000"),
            (1_000_000, ["2.50", "0.25", "15"], "t2:google/gemini-2.5-pro@2025-06-17>200000"),
            // A tier without a cache-read price bills cached tokens at its own input price.
            (1_000_001, ["5", "5", "20"], "t2:google/gemini-2.5-pro@2025-06-17>1000000"),
            (5_000_000, ["5", "5", "20"], "t2:google/gemini-2.5-pro@2025-06-17>1000000"),
        ];
        for (input_tokens, [input, cached, output], version) in cases {
            e.input_tokens = input_tokens;
            e.cached_input_tokens = input_tokens / 3;
            let (cost, pricing) = table.price(&e, OCT_2025);
            let want = i128::from(input_tokens - input_tokens / 3) * pico_per_token(input)
                + i128::from(input_tokens / 3) * pico_per_token(cached)
                + i128::from(e.output_tokens) * pico_per_token(output);
            assert_eq!(cost, PicoUsd(want), "{input_tokens} input tokens");
            assert_eq!(pricing, Pricing::Table(version.into()), "{input_tokens} input tokens");
        }
    }

    #[test]
    fn tiers_must_be_given_in_increasing_order() {
        let text = TIERED.replace("above_input_tokens = 1000000", "above_input_tokens = 200000");
        let err = PriceTable::from_toml(&text, "test").unwrap_err().to_string();
        assert_eq!(
            err,
            "test: price[0] (google/gemini-2.5-pro) `tier` thresholds must be given in increasing order, each once"
        );
        let unknown = TIERED.replace("above_input_tokens = 1000000", "above_input_tokens = 1000000\nbogus = 1");
        assert!(PriceTable::from_toml(&unknown, "test").unwrap_err().to_string().contains("bogus"));
    }

    proptest::proptest! {
        /// Every token kind, on both sides of every threshold, costs exactly what a computation
        /// from the decimal prices gives, to the pico-dollar.
        #[test]
        fn tiered_costs_are_exact(
            input in 0u64..3_000_000, cached_share in 0u64..=100, write_share in 0u64..=100,
            write_1h_share in 0u64..=100, output in 0u64..200_000,
        ) {
            let table = PriceTable::from_toml(TIERED, "test").unwrap();
            let mut e = event("google", "gemini-2.5-pro");
            e.input_tokens = input;
            e.cached_input_tokens = input * cached_share / 100;
            e.cache_write_tokens = (input - e.cached_input_tokens) * write_share / 100;
            e.cache_write_1h_tokens = (input - e.cached_input_tokens - e.cache_write_tokens) * write_1h_share / 100;
            e.output_tokens = output;
            // A missing write price is the input's; a missing 1-hour price the write price.
            let [p_in, p_cached, p_write, p_write_1h, p_out] = match input {
                0..=200_000 => ["1.25", "0.125", "1.25", "1.25", "10"],
                200_001..=1_000_000 => ["2.50", "0.25", "3.125", "5", "15"],
                _ => ["5", "5", "6.25", "6.25", "20"],
            };
            let uncached = input - e.cached_input_tokens - e.cache_write_tokens - e.cache_write_1h_tokens;
            let want = i128::from(uncached) * pico_per_token(p_in)
                + i128::from(e.cached_input_tokens) * pico_per_token(p_cached)
                + i128::from(e.cache_write_tokens) * pico_per_token(p_write)
                + i128::from(e.cache_write_1h_tokens) * pico_per_token(p_write_1h)
                + i128::from(output) * pico_per_token(p_out);
            proptest::prop_assert_eq!(table.price(&e, OCT_2025).0, PicoUsd(want));
        }
    }
}
