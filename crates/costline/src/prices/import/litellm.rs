//! LiteLLM's `model_prices_and_context_window.json` (shipped in the `litellm` wheel as
//! `litellm/model_prices_and_context_window_backup.json`): an object of entries keyed by model,
//! USD per token as JSON numbers. Each entry is one candidate row.
//!
//! Fields, read as LiteLLM's own cost calculator reads them:
//! - `input_cost_per_token`, `cache_read_input_token_cost`, `cache_creation_input_token_cost`,
//!   `cache_creation_input_token_cost_above_1hr`, `output_cost_per_token` → `input`,
//!   `cached_input`, `cache_write`, `cache_write_1h`, `output`.
//! - `<those>_above_<N>k_tokens` → a `[[price.tier]]` above N×1000 input tokens (`_above_<N>_tokens`:
//!   above N). A price a tier does not give is the one of the tier below (LiteLLM walks the
//!   thresholds upwards, each overriding what it names). xAI bills a tier from the threshold
//!   itself (LiteLLM: inclusive), so its tiers are above N−1.
//! - `tiered_pricing` (`range: [start, end]`, all-or-nothing per request, `start < input <= end`):
//!   the range from 0 is the row, each other range a tier above its start; the ranges must
//!   follow each other. A range without an output price takes the entry's `output_cost_per_token`.
//! - Not imported, listed in the summary: `*_batches`, `*_priority`, `*_flex` (not pay-as-you-go
//!   list prices), `output_cost_per_reasoning_token` where it differs from the output price
//!   (costline bills reasoning as output), and every other `*cost*` field (audio, image, per
//!   second, search…), whose tokens or units usage events do not carry.
//! - Skipped with the reason: `sample_spec`, entries whose `mode` is not `chat`, `completion` or
//!   `responses` (embedding, image, audio, rerank…), entries without an input or output price,
//!   region- or commitment-specific keys, and any price with no exact 6-decimal form.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use super::{
    costline_model, costline_provider, usd_per_token, Candidate, CatalogRates, CatalogRow, Field, NotImported,
    ParsedCatalog,
};

/// The `mode`s of models that bill tokens in and out.
const MODES: [&str; 3] = ["chat", "completion", "responses"];

/// LiteLLM providers whose long-context tier starts at the threshold itself.
const INCLUSIVE_THRESHOLDS: [&str; 1] = ["xai"];

type Entry = BTreeMap<String, Box<RawValue>>;

/// Reads the whole file; an entry that is not usable becomes a skipped candidate, only a file
/// that is not a JSON object of entries is an error.
pub fn parse(text: &str) -> Result<ParsedCatalog, serde_json::Error> {
    let file: BTreeMap<String, Box<RawValue>> = serde_json::from_str(text)?;
    let candidates = file
        .iter()
        .map(|(key, raw)| match read_row(key, raw) {
            Ok((row, rank)) => Candidate { source: key.clone(), rank, row: Ok(row) },
            Err(reason) => Candidate { source: key.clone(), rank: usize::MAX, row: Err(reason) },
        })
        .collect();
    Ok(ParsedCatalog { catalog: "litellm", entries: file.len(), candidates })
}

fn read_row(key: &str, raw: &RawValue) -> Result<(CatalogRow, usize), String> {
    if key == "sample_spec" {
        return Err("LiteLLM's description of the format, not a model".into());
    }
    let entry: Entry = serde_json::from_str(raw.get()).map_err(|_| "not a JSON object".to_string())?;
    let mode = text_field(&entry, "mode")?
        .ok_or_else(|| "no `mode`: not known to be a chat, completion or responses model".to_string())?;
    if !MODES.contains(&mode.as_str()) {
        return Err(format!("mode `{mode}` is not chat, completion or responses"));
    }
    let catalog_provider =
        text_field(&entry, "litellm_provider")?.ok_or_else(|| "no `litellm_provider`".to_string())?;
    let (provider, rank) = costline_provider(&catalog_provider);
    let model = costline_model(key, &catalog_provider, &provider)?;
    let inclusive = INCLUSIVE_THRESHOLDS.contains(&catalog_provider.to_lowercase().as_str());
    let (rates, tiers, not_imported) = read_prices(&entry, inclusive)?;
    Ok((CatalogRow { provider, model, rates, tiers, not_imported }, rank))
}

fn text_field(entry: &Entry, key: &str) -> Result<Option<String>, String> {
    match entry.get(key) {
        Some(raw) if raw.get() != "null" => {
            serde_json::from_str(raw.get()).map(Some).map_err(|_| format!("`{key}` is not a string"))
        }
        _ => Ok(None),
    }
}

// `…_above_1hr` is not a prompt-length tier: it is matched whole, after the 5-minute write
// price's `_above_` finds no token count in `1hr`.
const FIELDS: [(&str, Field); 5] = [
    ("input_cost_per_token", Field::Input),
    ("cache_read_input_token_cost", Field::CacheRead),
    ("cache_creation_input_token_cost", Field::CacheWrite),
    ("cache_creation_input_token_cost_above_1hr", Field::CacheWrite1h),
    ("output_cost_per_token", Field::Output),
];

/// The prices one level (the row, a tier) names, in micro-USD per million tokens.
#[derive(Debug, Clone, Copy, Default)]
struct Named {
    input: Option<i128>,
    cached_input: Option<i128>,
    cache_write: Option<i128>,
    cache_write_1h: Option<i128>,
    output: Option<i128>,
}

impl Named {
    fn set(&mut self, field: Field, price: i128) {
        let slot = match field {
            Field::Input => &mut self.input,
            Field::CacheRead => &mut self.cached_input,
            Field::CacheWrite => &mut self.cache_write,
            Field::CacheWrite1h => &mut self.cache_write_1h,
            Field::Output => &mut self.output,
        };
        *slot = Some(price);
    }

    /// These prices, and `below`'s where these name none.
    fn over(self, below: Named) -> Named {
        Named {
            input: self.input.or(below.input),
            cached_input: self.cached_input.or(below.cached_input),
            cache_write: self.cache_write.or(below.cache_write),
            cache_write_1h: self.cache_write_1h.or(below.cache_write_1h),
            output: self.output.or(below.output),
        }
    }

    fn complete(self) -> Result<CatalogRates, String> {
        Ok(CatalogRates {
            input: self.input.ok_or_else(|| "no `input_cost_per_token`".to_string())?,
            cached_input: self.cached_input,
            cache_write: self.cache_write,
            cache_write_1h: self.cache_write_1h,
            output: self.output.ok_or_else(|| "no `output_cost_per_token`".to_string())?,
        })
    }
}

/// What a key of an entry is.
#[derive(Debug, PartialEq)]
enum Key {
    Price(&'static str),
    /// A price above a prompt length.
    Above(&'static str, u64),
    Reasoning,
    Tiered,
    /// A price costline has no place for: what it is.
    NotImported(String),
    NotAPrice,
}

fn classify(key: &str) -> Key {
    if key == "tiered_pricing" {
        return Key::Tiered;
    }
    if key == "output_cost_per_reasoning_token" {
        return Key::Reasoning;
    }
    for (suffix, what) in [
        ("_batches", "batch prices (`*_batches`), not pay-as-you-go"),
        ("_priority", "priority-tier prices (`*_priority`), not pay-as-you-go"),
        ("_flex", "flex-tier prices (`*_flex`), not pay-as-you-go"),
    ] {
        if key.ends_with(suffix) {
            return Key::NotImported(what.to_string());
        }
    }
    for (name, _) in FIELDS {
        if key == name {
            return Key::Price(name);
        }
        if let Some(above) = key.strip_prefix(name).and_then(|rest| rest.strip_prefix("_above_")).and_then(threshold) {
            return Key::Above(name, above);
        }
    }
    if key.contains("cost") || key.contains("price") {
        return Key::NotImported(format!("`{key}`"));
    }
    Key::NotAPrice
}

/// `200k_tokens` → 200000, `128_tokens` → 128.
fn threshold(text: &str) -> Option<u64> {
    let number = text.strip_suffix("_tokens")?;
    let (digits, scale) = match number.strip_suffix('k') {
        Some(digits) => (digits, 1000),
        None => (number, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(scale)
}

fn field_of(name: &str) -> Option<Field> {
    FIELDS.iter().find(|(n, _)| *n == name).map(|(_, field)| *field)
}

type Prices = (CatalogRates, Vec<(u64, CatalogRates)>, Vec<NotImported>);

fn read_prices(entry: &Entry, inclusive: bool) -> Result<Prices, String> {
    let mut base = Named::default();
    let mut above: BTreeMap<u64, Named> = BTreeMap::new();
    let mut not_imported = Vec::new();
    let mut reasoning = None;
    for (key, raw) in entry.iter().filter(|(_, raw)| raw.get() != "null") {
        match classify(key) {
            Key::Price(name) => {
                if let Some(field) = field_of(name) {
                    base.set(field, usd_per_token(key, raw.get())?);
                }
            }
            Key::Above(name, tokens) => {
                if let Some(field) = field_of(name) {
                    above.entry(tokens).or_default().set(field, usd_per_token(key, raw.get())?);
                }
            }
            Key::Reasoning => reasoning = Some((key, raw)),
            Key::NotImported(what) => not_imported.push(NotImported { what }),
            Key::Tiered | Key::NotAPrice => {}
        }
    }
    let (rates, tiers) = match entry.get("tiered_pricing").filter(|raw| raw.get() != "null") {
        Some(_) if !above.is_empty() => {
            return Err("both `tiered_pricing` and `*_above_*_tokens` prices: which one applies is unclear".into())
        }
        Some(raw) => tiered(raw, base.output, &mut not_imported)?,
        None => {
            let rates = base.complete()?;
            let mut tiers = Vec::with_capacity(above.len());
            let mut below = base;
            for (tokens, named) in above {
                let level = named.over(below);
                let tokens = if inclusive {
                    tokens.checked_sub(1).ok_or_else(|| "a tier from 0 input tokens".to_string())?
                } else {
                    tokens
                };
                tiers.push((tokens, level.complete()?));
                below = level;
            }
            (rates, tiers)
        }
    };
    if let Some((key, raw)) = reasoning {
        if usd_per_token(key, raw.get()).ok() != Some(rates.output) {
            not_imported.push(NotImported {
                what: "reasoning-token prices other than the output price (costline bills reasoning as output)".into(),
            });
        }
    }
    not_imported.sort();
    not_imported.dedup();
    Ok((rates, tiers, not_imported))
}

/// `tiered_pricing` → the row (the range from 0) and its tiers.
fn tiered(
    raw: &RawValue,
    entry_output: Option<i128>,
    not_imported: &mut Vec<NotImported>,
) -> Result<(CatalogRates, Vec<(u64, CatalogRates)>), String> {
    let ranges: Vec<Entry> =
        serde_json::from_str(raw.get()).map_err(|_| "`tiered_pricing` is not a list of objects".to_string())?;
    let mut levels = Vec::with_capacity(ranges.len());
    for (i, range) in ranges.iter().enumerate() {
        let bounds = range
            .get("range")
            .and_then(|raw| serde_json::from_str::<[Box<RawValue>; 2]>(raw.get()).ok())
            .ok_or_else(|| format!("`tiered_pricing[{i}].range` is not [start, end]"))?;
        let [start, end] = [&bounds[0], &bounds[1]].map(|bound| {
            costline_core::PicoUsd::parse_scaled(bound.get(), 0, false).ok().and_then(|n| u64::try_from(n).ok())
        });
        let (Some(start), Some(end)) = (start, end) else {
            return Err(format!("`tiered_pricing[{i}].range` bounds are not whole token counts"));
        };
        let mut named = Named::default();
        for (key, price) in range.iter().filter(|(key, raw)| *key != "range" && raw.get() != "null") {
            match field_of(key) {
                Some(field) => named.set(field, usd_per_token(&format!("tiered_pricing[{i}].{key}"), price.get())?),
                None if key == "output_cost_per_reasoning_token" => {}
                None => not_imported.push(NotImported { what: format!("`tiered_pricing.{key}`") }),
            }
        }
        if named.output.is_none() {
            named.output = entry_output;
        }
        let reasoning = range
            .get("output_cost_per_reasoning_token")
            .map(|raw| usd_per_token("output_cost_per_reasoning_token", raw.get()));
        if reasoning.is_some_and(|price| price.ok() != named.output) {
            not_imported.push(NotImported {
                what: "reasoning-token prices other than the output price (costline bills reasoning as output)".into(),
            });
        }
        levels.push((start, end, named));
    }
    levels.sort_by_key(|(start, _, _)| *start);
    let contiguous =
        levels.first().is_some_and(|(start, _, _)| *start == 0) && levels.windows(2).all(|pair| pair[0].1 == pair[1].0);
    if !contiguous {
        return Err("`tiered_pricing` ranges do not start at 0 and follow each other".into());
    }
    let mut levels = levels.into_iter();
    let rates = levels.next().map(|(_, _, named)| named.complete()).transpose()?;
    let rates = rates.ok_or_else(|| "`tiered_pricing` is empty".to_string())?;
    let tiers =
        levels.map(|(start, _, named)| named.complete().map(|rates| (start, rates))).collect::<Result<_, _>>()?;
    Ok((rates, tiers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(input: i128, cached: Option<i128>, write: Option<i128>, output: i128) -> CatalogRates {
        CatalogRates { input, cached_input: cached, cache_write: write, cache_write_1h: None, output }
    }

    fn one(key: &str, entry: &str) -> Result<CatalogRow, String> {
        let parsed = parse(&format!("{{\"{key}\": {entry}}}")).unwrap();
        assert_eq!(parsed.entries, 1);
        parsed.candidates.into_iter().next().unwrap().row
    }

    #[test]
    fn classifies_keys() {
        assert_eq!(classify("input_cost_per_token"), Key::Price("input_cost_per_token"));
        assert_eq!(classify("input_cost_per_token_above_200k_tokens"), Key::Above("input_cost_per_token", 200_000));
        assert_eq!(classify("output_cost_per_token_above_128_tokens"), Key::Above("output_cost_per_token", 128));
        assert_eq!(
            classify("cache_read_input_token_cost_above_272k_tokens"),
            Key::Above("cache_read_input_token_cost", 272_000)
        );
        assert_eq!(
            classify("cache_creation_input_token_cost_above_1hr"),
            Key::Price("cache_creation_input_token_cost_above_1hr")
        );
        assert_eq!(
            classify("cache_creation_input_token_cost_above_1hr_above_200k_tokens"),
            Key::Above("cache_creation_input_token_cost_above_1hr", 200_000)
        );
        assert!(
            matches!(classify("input_cost_per_token_above_200k_tokens_priority"), Key::NotImported(w) if w.contains("priority"))
        );
        assert!(matches!(classify("cache_read_input_token_cost_batches"), Key::NotImported(w) if w.contains("batch")));
        assert!(matches!(classify("output_cost_per_token_flex"), Key::NotImported(w) if w.contains("flex")));
        assert_eq!(
            classify("cache_creation_input_token_cost_above_12hr"),
            Key::NotImported("`cache_creation_input_token_cost_above_12hr`".into())
        );
        assert_eq!(classify("input_cost_per_audio_token"), Key::NotImported("`input_cost_per_audio_token`".into()));
        assert_eq!(classify("max_input_tokens"), Key::NotAPrice);
    }

    #[test]
    fn reads_cache_prices_and_the_one_hour_write() {
        let row = one(
            "claude-sonnet-4-5",
            r#"{"litellm_provider": "anthropic", "mode": "chat", "input_cost_per_token": 3e-06,
                "output_cost_per_token": 1.5e-05, "cache_read_input_token_cost": 3e-07,
                "cache_creation_input_token_cost": 3.75e-06, "cache_creation_input_token_cost_above_1hr": 6e-06,
                "input_cost_per_token_batches": 1.5e-06, "output_cost_per_token_batches": 7.5e-06,
                "max_input_tokens": 200000}"#,
        )
        .unwrap();
        assert_eq!((row.provider.as_str(), row.model.as_str()), ("anthropic", "claude-sonnet-4-5"));
        let want = CatalogRates {
            cache_write_1h: Some(6_000_000),
            ..rates(3_000_000, Some(300_000), Some(3_750_000), 15_000_000)
        };
        assert_eq!(row.rates, want);
        assert!(row.tiers.is_empty());
        assert_eq!(
            row.not_imported,
            vec![NotImported { what: "batch prices (`*_batches`), not pay-as-you-go".into() }]
        );
    }

    #[test]
    fn above_threshold_prices_become_tiers_that_inherit_from_below() {
        let row = one(
            "gemini/gemini-2.5-pro",
            r#"{"litellm_provider": "gemini", "mode": "chat", "input_cost_per_token": 1.25e-06,
                "output_cost_per_token": 1e-05, "cache_read_input_token_cost": 1.25e-07,
                "input_cost_per_token_above_200k_tokens": 2.5e-06, "output_cost_per_token_above_200k_tokens": 1.5e-05,
                "input_cost_per_token_above_1000k_tokens": 5e-06}"#,
        )
        .unwrap();
        assert_eq!((row.provider.as_str(), row.model.as_str()), ("google", "gemini-2.5-pro"));
        assert_eq!(row.rates, rates(1_250_000, Some(125_000), None, 10_000_000));
        assert_eq!(
            row.tiers,
            vec![
                (200_000, rates(2_500_000, Some(125_000), None, 15_000_000)),
                (1_000_000, rates(5_000_000, Some(125_000), None, 15_000_000)),
            ]
        );
        // xAI bills the tier from the threshold itself.
        let row = one(
            "xai/grok-4",
            r#"{"litellm_provider": "xai", "mode": "chat", "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
                "input_cost_per_token_above_128k_tokens": 6e-06, "output_cost_per_token_above_128k_tokens": 3e-05}"#,
        )
        .unwrap();
        assert_eq!(row.tiers, vec![(127_999, rates(6_000_000, None, None, 30_000_000))]);
    }

    #[test]
    fn tiered_pricing_ranges_become_tiers() {
        let row = one(
            "dashscope/qwen-plus",
            r#"{"litellm_provider": "dashscope", "mode": "chat", "output_cost_per_token": 1.2e-06, "tiered_pricing": [
                {"input_cost_per_token": 1.2e-06, "output_cost_per_token": 3.6e-06, "range": [256000.0, 1000000.0]},
                {"input_cost_per_token": 4e-07, "output_cost_per_reasoning_token": 4e-06, "range": [0, 256000.0]},
                {"input_cost_per_token": 2e-06, "cache_read_input_token_cost": 4e-07, "range": [1000000.0, 2000000.0]}]}"#,
        )
        .unwrap();
        assert_eq!((row.provider.as_str(), row.model.as_str()), ("dashscope", "qwen-plus"));
        assert_eq!(row.rates, rates(400_000, None, None, 1_200_000), "output from the entry");
        assert_eq!(
            row.tiers,
            vec![
                (256_000, rates(1_200_000, None, None, 3_600_000)),
                (1_000_000, rates(2_000_000, Some(400_000), None, 1_200_000))
            ]
        );
        assert_eq!(row.not_imported.len(), 1, "{:?}", row.not_imported);
        assert!(row.not_imported[0].what.starts_with("reasoning-token prices"));
        let gap = one(
            "m",
            r#"{"litellm_provider": "p", "mode": "chat", "tiered_pricing": [
                {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06, "range": [0, 32000]},
                {"input_cost_per_token": 2e-06, "output_cost_per_token": 2e-06, "range": [64000, 128000]}]}"#,
        );
        assert_eq!(gap, Err("`tiered_pricing` ranges do not start at 0 and follow each other".into()));
    }

    #[test]
    fn skips_with_the_reason() {
        let skipped = |key: &str, entry: &str| one(key, entry).unwrap_err();
        assert_eq!(skipped("sample_spec", "{}"), "LiteLLM's description of the format, not a model");
        assert_eq!(
            skipped(
                "text-embedding-3-small",
                r#"{"litellm_provider": "openai", "mode": "embedding", "input_cost_per_token": 2e-08}"#
            ),
            "mode `embedding` is not chat, completion or responses"
        );
        assert_eq!(
            skipped("m", r#"{"litellm_provider": "openai", "input_cost_per_token": 2e-08}"#),
            "no `mode`: not known to be a chat, completion or responses model"
        );
        assert_eq!(
            skipped("novita/x", r#"{"litellm_provider": "novita", "mode": "chat", "input_cost_per_token": 9.499999999999999e-07, "output_cost_per_token": 1e-06}"#),
            "`input_cost_per_token` = 9.499999999999999e-07 USD per token has no exact price in USD per million tokens with 6 decimals"
        );
        assert_eq!(
            skipped("m", r#"{"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1e-06}"#),
            "no `output_cost_per_token`"
        );
        assert!(skipped("azure/eu/gpt-4o", r#"{"litellm_provider": "azure", "mode": "chat", "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}"#)
            .starts_with("region- or commitment-specific price"));
        assert_eq!(skipped("m", "[1]"), "not a JSON object");
    }
}
