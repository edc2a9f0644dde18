//! The price table in force: the built-in one (`schemas/prices.toml`, compiled in) plus the
//! user's override file.

use anyhow::Context;
use costline_core::PriceTable;

use crate::config::PricingConfig;

const BUILTIN: &str = include_str!("../../../schemas/prices.toml");

pub fn load(config: &PricingConfig) -> anyhow::Result<PriceTable> {
    let mut table = PriceTable::from_toml(BUILTIN, "built-in schemas/prices.toml").context("built-in price table")?;
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
}
