//! Catalog import: turns a community price catalog (LiteLLM's
//! `model_prices_and_context_window.json`, Langfuse's default model prices) into a price file
//! in costline's own format (`schemas/prices.toml`), usable as `pricing.override_file`.
//!
//! Why it is shaped this way: a catalog is a convenience, not an authority. Hundreds of its
//! entries are models costline never meets, some are wrong, and some say more than costline's
//! format can hold. So nothing here is silent: every entry of the file ends in exactly one
//! outcome of the summary (added, changed, unchanged, conflict or skipped, with the reason), and
//! every price the format cannot hold is listed as "not imported". Only rows that add to or
//! change the built-in table are written, so the file is the smallest override that brings the
//! table to the catalog; a row that would take a price away from the built-in table (a tier, a
//! cache price) is a conflict and is not written: the built-in row stays in force until someone
//! edits it by hand.
//!
//! Exactness: catalogs give USD per token as JSON numbers. Each number's text (as written in
//! the file, read as a raw JSON value, never through an `f64`) is shifted by decimal digits into
//! pico-USD per token, which is micro-USD per million tokens: the price file's 6 decimals. A
//! number with more digits than that (`9.499999999999999e-7`, a float artefact) is reported and
//! its entry skipped; nothing is rounded.
//!
//! Layout: [`litellm`] and [`langfuse`] read a catalog into [`Candidate`]s (one price row each,
//! or the reason there is none); [`plan`] filters them, settles duplicates and compares them with
//! the built-in table; [`render_toml`] and [`render_summary`] write the two outputs. No I/O here:
//! the command (`prices/mod.rs`) reads the files and asks ClickHouse.
//!
//! Provider and model mapping (also in the README):
//!
//! | catalog | catalog provider / key | costline `provider` | costline `model` |
//! |---|---|---|---|
//! | LiteLLM | `openai`, `text-completion-openai` | `openai` | key |
//! | LiteLLM | `anthropic` | `anthropic` | key |
//! | LiteLLM | `gemini`, `vertex_ai-language-models` | `google` | key without `gemini/`, `vertex_ai/` |
//! | LiteLLM | `bedrock_converse`, `bedrock` | `bedrock` | key without `bedrock/`; keys left with a `/` (region, commitment) are skipped |
//! | LiteLLM | `azure`, `azure_text` | `azure_openai` | key without `azure/`; keys left with a `/` (`eu/`, `global/`…) are skipped |
//! | LiteLLM | `mistral`, `codestral`, `text-completion-codestral` | `mistral` | key without `mistral/` |
//! | LiteLLM | `cohere_chat`, `cohere` | `cohere` | key |
//! | LiteLLM | `vertex_ai` and other `vertex_ai-*` | `vertex_ai` | key without `vertex_ai/` |
//! | LiteLLM | any other | the same name | key without a first segment naming the provider |
//! | Langfuse | id with a `openai/`, `anthropic/`, `google/`… prefix | the prefix, mapped as above | id without it |
//! | Langfuse | Bedrock id (`anthropic.claude-…`, `us.anthropic.claude-…`) | `bedrock` | id |
//! | Langfuse | Vertex id (`claude-…@20250929`) | `vertex_ai` | id |
//! | Langfuse | other ids | the provider of the pattern's prefix | id |
//!
//! When two LiteLLM entries give one provider and model different prices, the entry whose
//! catalog provider comes first in the table wins (`gemini` over `vertex_ai-language-models`,
//! `bedrock_converse` over `bedrock`); entries of equal rank that disagree are all skipped.

pub mod langfuse;
pub mod litellm;
mod plan;
mod render;

pub use plan::{plan, ImportPlan, Outcome, Selection};
pub use render::{render_summary, render_toml};

use costline_core::money::AmountError;
use costline_core::PicoUsd;

/// The five prices of a price row, as the catalogs' keys are sorted into them.
#[derive(Debug, Clone, Copy)]
enum Field {
    Input,
    CacheRead,
    CacheWrite,
    CacheWrite1h,
    Output,
}

/// A row's or a tier's prices in micro-USD per million tokens (= pico-USD per token, the core's
/// unit). `None`: the catalog gives no such price, the price file omits it, and those tokens
/// are billed at the input price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogRates {
    pub input: i128,
    pub cached_input: Option<i128>,
    pub cache_write: Option<i128>,
    /// `None`: the 1-hour cache-write price is the cache-write price.
    pub cache_write_1h: Option<i128>,
    pub output: i128,
}

/// One price row read from a catalog entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogRow {
    pub provider: String,
    pub model: String,
    pub rates: CatalogRates,
    /// `(above_input_tokens, rates)`, thresholds ascending.
    pub tiers: Vec<(u64, CatalogRates)>,
    /// Prices of the entry that costline's format cannot hold.
    pub not_imported: Vec<NotImported>,
}

impl CatalogRow {
    /// Same prices (the row's, its tiers'), wherever they come from.
    fn same_prices(&self, other: &CatalogRow) -> bool {
        self.rates == other.rates && self.tiers == other.tiers
    }
}

/// A kind of price of a catalog entry that the price file does not hold.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NotImported {
    /// What it is: ``batch prices (`*_batches`)``…
    pub what: String,
}

/// What one catalog entry (or, for Langfuse, one model id derived from an entry) gives.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The entry's key (LiteLLM) or `modelName` (Langfuse), as the summary names it.
    pub source: String,
    /// Precedence among entries that price the same model differently: lower wins.
    pub rank: usize,
    /// The row, or why the entry gives none.
    pub row: Result<CatalogRow, String>,
}

/// A catalog file, read.
#[derive(Debug, Clone)]
pub struct ParsedCatalog {
    /// Which catalog: `litellm` or `langfuse`.
    pub catalog: &'static str,
    /// Entries in the file.
    pub entries: usize,
    /// One per entry, or (Langfuse) one per model id an entry prices: the summary's counts add
    /// up to their number.
    pub candidates: Vec<Candidate>,
}

/// A catalog's USD-per-token number (its JSON text) → micro-USD per million tokens, exactly.
/// `key` names it in the error.
pub fn usd_per_token(key: &str, json_text: &str) -> Result<i128, String> {
    let text = json_text.trim();
    if !text.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        return Err(format!("`{key}` is not a number: {text}"));
    }
    PicoUsd::parse_scaled(text, 12, false).map_err(|e| match e {
        AmountError::TooPrecise { .. } => {
            format!("`{key}` = {text} USD per token has no exact price in USD per million tokens with 6 decimals")
        }
        other => format!("`{key}` = {text} {other}"),
    })
}

/// Micro-USD per million tokens → the price file's decimal text (`3000000` → `"3"`,
/// `125000` → `"0.125"`).
pub fn per_million_text(micro_usd: i128) -> String {
    let sign = if micro_usd < 0 { "-" } else { "" };
    let abs = micro_usd.unsigned_abs();
    let (whole, fraction) = (abs / 1_000_000, abs % 1_000_000);
    if fraction == 0 {
        return format!("{sign}{whole}");
    }
    let fraction = format!("{fraction:06}");
    format!("{sign}{whole}.{}", fraction.trim_end_matches('0'))
}

/// How a LiteLLM `litellm_provider` or Langfuse id prefix maps to costline's event `provider`,
/// in precedence order (see the module doc).
const PROVIDERS: &[(&str, &str)] = &[
    ("openai", "openai"),
    ("text-completion-openai", "openai"),
    ("anthropic", "anthropic"),
    ("gemini", "google"),
    ("vertex_ai-language-models", "google"),
    ("google", "google"),
    ("googleai", "google"),
    ("bedrock_converse", "bedrock"),
    ("bedrock", "bedrock"),
    ("azure", "azure_openai"),
    ("azure_text", "azure_openai"),
    ("mistral", "mistral"),
    ("codestral", "mistral"),
    ("text-completion-codestral", "mistral"),
    ("cohere_chat", "cohere"),
    ("cohere", "cohere"),
    ("vertex_ai", "vertex_ai"),
];

/// A catalog's provider name → costline's `provider` and the precedence rank of its entries.
pub fn costline_provider(catalog_provider: &str) -> (String, usize) {
    let name = catalog_provider.to_lowercase();
    if let Some(rank) = PROVIDERS.iter().position(|(from, _)| *from == name) {
        return (PROVIDERS[rank].1.to_string(), rank);
    }
    if name.starts_with("vertex_ai-") {
        return ("vertex_ai".to_string(), PROVIDERS.len());
    }
    (name, PROVIDERS.len())
}

/// Providers whose model ids never hold a `/`: what is left of a key after its provider prefix
/// with a `/` in it names a region or a commitment, which usage events do not carry.
const SLASHLESS_MODEL_IDS: &[&str] = &["bedrock", "azure_openai"];

/// The costline model id of a catalog key: without a first segment naming the catalog provider
/// (`gemini/`, `vertex_ai/`, `amazon-nova/`) or costline's provider; `Err` for a region- or
/// commitment-specific key.
pub fn costline_model(key: &str, catalog_provider: &str, provider: &str) -> Result<String, String> {
    let catalog_provider = catalog_provider.to_lowercase();
    let names_provider = |segment: &str| {
        let segment = segment.to_lowercase();
        segment == catalog_provider
            || segment == catalog_provider.replace('_', "-")
            || catalog_provider.split_once('-').is_some_and(|(family, _)| segment == family)
            || segment == provider
    };
    let model = match key.split_once('/') {
        Some((first, rest)) if names_provider(first) => rest,
        _ => key,
    };
    if model.is_empty() {
        return Err("the key names no model".into());
    }
    if SLASHLESS_MODEL_IDS.contains(&provider) && model.contains('/') {
        return Err(format!(
            "region- or commitment-specific price (`{model}`): usage events carry no region or commitment"
        ));
    }
    Ok(model.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_numbers_convert_exactly_or_not_at_all() {
        for (text, micro) in [
            ("3e-06", 3_000_000),
            ("1.25e-07", 125_000),
            ("3.75e-06", 3_750_000),
            ("1.5E-05", 15_000_000),
            ("0.0000025", 2_500_000),
            ("2.5e-8", 25_000),
            ("1e-12", 1),
            ("0.0", 0),
            ("0", 0),
            ("1e+2", 100_000_000_000_000),
        ] {
            assert_eq!(usd_per_token("k", text), Ok(micro), "{text}");
        }
        let err = usd_per_token("input_cost_per_token", "9.499999999999999E-7").unwrap_err();
        assert_eq!(
            err,
            "`input_cost_per_token` = 9.499999999999999E-7 USD per token has no exact price in USD per million tokens with 6 decimals"
        );
        assert!(usd_per_token("k", "-1e-6").unwrap_err().contains("must be >= 0"));
        assert!(usd_per_token("k", "\"3e-6\"").unwrap_err().contains("is not a number"));
    }

    #[test]
    fn per_million_text_is_the_shortest_decimal() {
        assert_eq!(per_million_text(3_000_000), "3");
        assert_eq!(per_million_text(125_000), "0.125");
        assert_eq!(per_million_text(22_500_000), "22.5");
        assert_eq!(per_million_text(1), "0.000001");
        assert_eq!(per_million_text(0), "0");
    }

    #[test]
    fn provider_mapping() {
        for (catalog, provider) in [
            ("openai", "openai"),
            ("text-completion-openai", "openai"),
            ("anthropic", "anthropic"),
            ("gemini", "google"),
            ("vertex_ai-language-models", "google"),
            ("bedrock", "bedrock"),
            ("bedrock_converse", "bedrock"),
            ("azure", "azure_openai"),
            ("mistral", "mistral"),
            ("vertex_ai-anthropic_models", "vertex_ai"),
            ("vertex_ai", "vertex_ai"),
            ("xai", "xai"),
            ("DeepSeek", "deepseek"),
        ] {
            assert_eq!(costline_provider(catalog).0, provider, "{catalog}");
        }
        let rank = |p| costline_provider(p).1;
        assert!(rank("gemini") < rank("vertex_ai-language-models"));
        assert!(rank("bedrock_converse") < rank("bedrock"));
        assert!(rank("azure") < rank("xai"));
    }

    #[test]
    fn model_mapping() {
        let model = |key, catalog| costline_model(key, catalog, &costline_provider(catalog).0);
        assert_eq!(model("claude-sonnet-4-5", "anthropic").as_deref(), Ok("claude-sonnet-4-5"));
        assert_eq!(model("anthropic/claude-sonnet-4-5", "anthropic").as_deref(), Ok("claude-sonnet-4-5"));
        assert_eq!(model("gemini/gemini-2.5-pro", "gemini").as_deref(), Ok("gemini-2.5-pro"));
        assert_eq!(model("vertex_ai/gemini-3.1-flash", "vertex_ai-language-models").as_deref(), Ok("gemini-3.1-flash"));
        assert_eq!(
            model("vertex_ai/claude-opus-4-5@20251101", "vertex_ai-anthropic_models").as_deref(),
            Ok("claude-opus-4-5@20251101")
        );
        assert_eq!(model("amazon-nova/nova-micro-v1", "amazon_nova").as_deref(), Ok("nova-micro-v1"));
        assert_eq!(model("mistral/mistral-large-latest", "mistral").as_deref(), Ok("mistral-large-latest"));
        assert_eq!(model("azure/gpt-4o", "azure").as_deref(), Ok("gpt-4o"));
        assert_eq!(
            model("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "bedrock_converse").as_deref(),
            Ok("us.anthropic.claude-sonnet-4-5-20250929-v1:0")
        );
        // Slashes that are part of the provider's own model ids stay.
        assert_eq!(
            model("together_ai/Qwen/Qwen2.5-7B-Instruct-Turbo", "together_ai").as_deref(),
            Ok("Qwen/Qwen2.5-7B-Instruct-Turbo")
        );
        assert_eq!(model("ft:gpt-4o-2024-08-06", "openai").as_deref(), Ok("ft:gpt-4o-2024-08-06"));
        // A first segment that is not the provider is part of the id.
        assert_eq!(model("openai/gpt-oss-120b", "groq").as_deref(), Ok("openai/gpt-oss-120b"));
        for (key, catalog) in [
            ("azure/eu/gpt-4o-2024-08-06", "azure"),
            ("bedrock/us-east-1/anthropic.claude-instant-v1", "bedrock"),
            ("bedrock/*/1-month-commitment/cohere.command-light-text-v14", "bedrock"),
        ] {
            assert!(model(key, catalog).unwrap_err().starts_with("region- or commitment-specific"), "{key}");
        }
    }
}
