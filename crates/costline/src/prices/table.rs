//! The price table in force: the built-in one (`schemas/prices.toml`, compiled in) plus the
//! user's override file.

use anyhow::Context;
use costline_core::PriceTable;

use crate::config::PricingConfig;

const BUILTIN: &str = include_str!("../../../../schemas/prices.toml");

/// The built-in table alone.
pub fn builtin() -> anyhow::Result<PriceTable> {
    PriceTable::from_toml(BUILTIN, "built-in schemas/prices.toml").context("built-in price table")
}

pub fn load(config: &PricingConfig) -> anyhow::Result<PriceTable> {
    let mut table = builtin()?;
    if let Some(path) = &config.override_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("config key `pricing.override_file`: cannot read {}", path.display()))?;
        table.merge_toml(&text, &path.display().to_string())?;
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    #[test]
    fn builtin_table_loads_and_covers_four_providers() {
        let table = super::load(&Default::default()).unwrap();
        for (provider, model) in [
            ("openai", "gpt-4o"),
            ("anthropic", "claude-sonnet-4-5"),
            ("google", "gemini-2.5-flash"),
            ("mistral", "mistral-small-latest"),
        ] {
            assert!(table.price_at(provider, model, 1_780_000_000_000).is_some(), "{provider}/{model}");
        }
        assert!(table.model_count() > 50);
    }

    /// The long-context tiers the providers publish: each (provider, model, threshold) is priced
    /// at the base rates at the threshold and at the tier's (USD per million) one token above.
    #[test]
    fn builtin_table_prices_long_prompts_at_their_tier() {
        let table = super::load(&Default::default()).unwrap();
        let at = 1_796_000_000_000; // 2026-11
        for (provider, model, above, base, tier) in [
            ("anthropic", "claude-sonnet-4-5", 200_000, ("3", "15"), ("6", "22.5")),
            ("google", "gemini-2.5-pro", 200_000, ("1.25", "10"), ("2.5", "15")),
            ("google", "gemini-3.1-pro-preview", 200_000, ("2", "12"), ("4", "18")),
            ("openai", "gpt-5.4", 272_000, ("2.5", "15"), ("5", "22.5")),
            ("anthropic", "claude-haiku-5-5", 100_000, ("0.1", "0.5"), ("0.5", "2.5")),
        ] {
            let price = table.price_at(provider, model, at).unwrap();
            let usd = |text: &str| costline_core::PicoUsd::parse_scaled(text, 6, false).unwrap();
            let rates = |tokens| price.rates_for(tokens);
            assert_eq!((rates(above).input, rates(above).output), (usd(base.0), usd(base.1)), "{model}");
            assert_eq!((rates(above + 1).input, rates(above + 1).output), (usd(tier.0), usd(tier.1)), "{model}");
        }
    }
}
